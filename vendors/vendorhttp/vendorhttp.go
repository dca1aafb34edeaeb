// Package vendorhttp holds what every vendor package needs of its HTTP
// client.
package vendorhttp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// DefaultTimeout bounds one vendor call when the caller gave no client.
const DefaultTimeout = 30 * time.Second

// MaxAnswer bounds the body of every answer to a call the broker makes on its
// own behalf (token, identity, sites, revoke). Token answers are a few hundred
// bytes and identity answers a few KiB; a user with hundreds of Atlassian
// sites stays far below it. x/oauth2 and the vendor packages each stop
// reading at 1 MiB too, but silently, so that a truncated answer fails as
// "invalid JSON"; this limit names the cause.
const MaxAnswer = 1 << 20

// ErrAnswerTooLarge is the error of a vendor answer over MaxAnswer. Calls
// that fail with it are transient failures, never a verdict on a token.
var ErrAnswerTooLarge = fmt.Errorf("vendor answer larger than %d bytes", MaxAnswer)

// NoRedirects returns a copy of hc (or a client with DefaultTimeout) that
// does not follow redirects and whose answers are bounded by MaxAnswer.
// Vendor APIs answer in place: a redirect means an instance asleep or a login
// page, and following it would carry a bearer token, or replay a form with
// the client secret (a 307 after a revoke), to wherever it points. It is
// meant for the broker's own vendor calls, not for proxied traffic, which
// streams.
func NoRedirects(hc *http.Client) *http.Client {
	c := &http.Client{Timeout: DefaultTimeout}
	if hc != nil {
		copied := *hc
		c = &copied
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if _, done := c.Transport.(limitAnswers); !done {
		rt := c.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		c.Transport = limitAnswers{rt}
	}
	return c
}

// limitAnswers refuses answers whose body is larger than MaxAnswer: at once
// when Content-Length says so, otherwise when the reader gets past it.
type limitAnswers struct{ rt http.RoundTripper }

func (l limitAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := l.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if res.ContentLength > MaxAnswer {
		_ = res.Body.Close()
		return nil, ErrAnswerTooLarge
	}
	res.Body = &limitedBody{rc: res.Body, left: MaxAnswer}
	return res, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, ErrAnswerTooLarge
	}
	// Read one byte more than allowed, to tell "exactly MaxAnswer" from "more".
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n + int(b.left), ErrAnswerTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// StatusError is an unexpected HTTP status from a vendor. It holds nothing
// from the body, which might echo the request; Detail is what the vendor's
// headers say of the cause (Atlassian's X-Failure-Category), when the
// caller asked for it.
type StatusError struct {
	Status int
	Detail string
}

func (e *StatusError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("unexpected status %d (%s)", e.Status, e.Detail)
	}
	return fmt.Sprintf("unexpected status %d", e.Status)
}

// GetJSON GETs rawURL with tok as its bearer token through hc (a
// NoRedirects client, which bounds the answer) and decodes a 200 answer
// into dst. Any other status is a *StatusError, with Detail from detail
// when it is set.
func GetJSON(ctx context.Context, hc *http.Client, rawURL string, tok *oauth2.Token, dst any, detail func(http.Header) string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	tok.SetAuthHeader(req)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		se := &StatusError{Status: resp.StatusCode}
		if detail != nil {
			se.Detail = detail(resp.Header)
		}
		return se
	}
	if err := json.NewDecoder(resp.Body).Decode(dst); err != nil {
		// A hibernating ServiceNow developer instance answers 200 with an
		// HTML page.
		return fmt.Errorf("decode answer (%s): %w", resp.Header.Get("Content-Type"), err)
	}
	return nil
}

// DrainClose lets the connection be reused without reading an unbounded
// body.
func DrainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, MaxAnswer))
	_ = body.Close()
}
