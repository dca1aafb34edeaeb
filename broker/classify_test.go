package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
)

const (
	testClientID     = "client-id-1"
	testClientSecret = "client-secret-XYZ"
	testRefreshToken = "refresh-token-SECRET"
	testCode         = "auth-code-SECRET"
)

// reply is one canned token-endpoint answer.
type reply struct {
	status      int
	contentType string
	header      map[string]string
	body        string
}

func (r reply) handler(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		// AuthStyleInParams: credentials in the form body, never a Basic header,
		// so that a failure is reported once and not after a silent second try.
		if err := req.ParseForm(); err != nil {
			t.Errorf("token request: parse form: %v", err)
		}
		if _, _, ok := req.BasicAuth(); ok {
			t.Errorf("token request carries a Basic header")
		}
		if got := req.PostForm.Get("client_id"); got != testClientID {
			t.Errorf("token request client_id = %q, want %q", got, testClientID)
		}
		if got := req.PostForm.Get("client_secret"); got != testClientSecret {
			t.Errorf("token request client_secret missing from the body")
		}
		for k, v := range r.header {
			w.Header().Set(k, v)
		}
		if r.contentType != "" {
			w.Header().Set("Content-Type", r.contentType)
		}
		w.WriteHeader(r.status)
		fmt.Fprint(w, r.body)
	}
}

const (
	jsonType = "application/json;charset=UTF-8"
	htmlType = "text/html; charset=utf-8"
	// A hibernating ServiceNow developer instance answers with a page like this.
	hibernatingHTML = `<!DOCTYPE html><html><head><title>Instance Hibernating page</title></head>` +
		`<body><p>Your instance is hibernating. Please log in to wake it up.</p></body></html>`
)

func testConfig(tokenURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   tokenURL + "/authorize",
			TokenURL:  tokenURL,
			AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: "https://broker.example/callback",
	}
}

// refresh runs one refresh the way the broker does: a fresh, bounded context
// per attempt and no token caching.
func refresh(t *testing.T, tokenURL string, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tok, err := testConfig(tokenURL).TokenSource(ctx, &oauth2.Token{RefreshToken: testRefreshToken}).Token()
	if err == nil {
		t.Fatalf("refresh succeeded with %q, want an error", tok.AccessToken)
	}
	return err
}

func exchange(t *testing.T, tokenURL string, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tok, err := testConfig(tokenURL).Exchange(ctx, testCode)
	if err == nil {
		t.Fatalf("exchange succeeded with %q, want an error", tok.AccessToken)
	}
	return err
}

// errShape is how x/oauth2 reports an answer; the classifier relies on it.
type errShape int

const (
	plainError       errShape = iota // transport error, unparsable 2xx, 2xx without access_token
	retrieveNoCode                   // *oauth2.RetrieveError with an empty ErrorCode
	retrieveWithCode                 // *oauth2.RetrieveError with ErrorCode set
)

func TestClassifyTokenError(t *testing.T) {
	tests := []struct {
		name     string
		reply    reply
		exchange bool // the authorization_code grant instead of refresh_token
		want     broker.ErrorClass
		shape    errShape
	}{
		{
			name:  "servicenow dead refresh token (same body as a broken client)",
			reply: reply{status: 401, contentType: jsonType, body: `{"error":"server_error","error_description":"access_denied"}`},
			want:  broker.ClassAmbiguous, shape: retrieveWithCode,
		},
		{
			name:     "servicenow 401 access_denied on code exchange",
			reply:    reply{status: 401, contentType: jsonType, body: `{"error":"server_error","error_description":"access_denied"}`},
			exchange: true,
			want:     broker.ClassAmbiguous, shape: retrieveWithCode,
		},
		{
			name:  "servicenow 401 server_error with another description",
			reply: reply{status: 401, contentType: jsonType, body: `{"error":"server_error","error_description":"internal failure"}`},
			want:  broker.ClassTransient, shape: retrieveWithCode,
		},
		{
			name:  "atlassian 403 invalid_grant",
			reply: reply{status: 403, contentType: jsonType, body: `{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`},
			want:  broker.ClassDead, shape: retrieveWithCode,
		},
		{
			name:  "400 invalid_grant",
			reply: reply{status: 400, contentType: jsonType, body: `{"error":"invalid_grant"}`},
			want:  broker.ClassDead, shape: retrieveWithCode,
		},
		{
			name:  "400 invalid_grant form-encoded",
			reply: reply{status: 400, contentType: "application/x-www-form-urlencoded", body: `error=invalid_grant`},
			want:  broker.ClassDead, shape: retrieveWithCode,
		},
		{
			name:  "200 carrying invalid_grant",
			reply: reply{status: 200, contentType: jsonType, body: `{"error":"invalid_grant"}`},
			want:  broker.ClassDead, shape: retrieveWithCode,
		},
		{
			name:  "401 invalid_client",
			reply: reply{status: 401, contentType: jsonType, body: `{"error":"invalid_client","error_description":"Unauthorized"}`},
			want:  broker.ClassClientConfig, shape: retrieveWithCode,
		},
		{
			name:     "400 invalid_client on code exchange",
			reply:    reply{status: 400, contentType: jsonType, body: `{"error":"invalid_client"}`},
			exchange: true,
			want:     broker.ClassClientConfig, shape: retrieveWithCode,
		},
		{
			name:  "atlassian 403 unauthorized_client",
			reply: reply{status: 403, contentType: jsonType, body: `{"error":"unauthorized_client","error_description":"client is not authorized"}`},
			want:  broker.ClassClientConfig, shape: retrieveWithCode,
		},
		{
			name:  "atlassian 401 access_denied",
			reply: reply{status: 401, contentType: jsonType, body: `{"error":"access_denied","error_description":"Unauthorized"}`},
			want:  broker.ClassClientConfig, shape: retrieveWithCode,
		},
		{
			name:  "400 unsupported_grant_type",
			reply: reply{status: 400, contentType: jsonType, body: `{"error":"unsupported_grant_type"}`},
			want:  broker.ClassClientConfig, shape: retrieveWithCode,
		},
		{
			name:  "500 server_error",
			reply: reply{status: 500, contentType: jsonType, body: `{"error":"server_error"}`},
			want:  broker.ClassTransient, shape: retrieveWithCode,
		},
		{
			name:  "500 that says invalid_grant is no verdict",
			reply: reply{status: 500, contentType: jsonType, body: `{"error":"invalid_grant"}`},
			want:  broker.ClassTransient, shape: retrieveWithCode,
		},
		{
			name:  "502 HTML from a gateway",
			reply: reply{status: 502, contentType: htmlType, body: `<html><body><h1>502 Bad Gateway</h1></body></html>`},
			want:  broker.ClassTransient, shape: retrieveNoCode,
		},
		{
			name:  "503 with Retry-After",
			reply: reply{status: 503, contentType: "text/plain", header: map[string]string{"Retry-After": "30"}, body: `Service Unavailable`},
			want:  broker.ClassTransient, shape: retrieveNoCode,
		},
		{
			name:  "408",
			reply: reply{status: 408, contentType: jsonType, body: `{}`},
			want:  broker.ClassTransient, shape: retrieveNoCode,
		},
		{
			name:  "429 with Retry-After",
			reply: reply{status: 429, contentType: jsonType, header: map[string]string{"Retry-After": "12"}, body: `{"error":"invalid_client"}`},
			want:  broker.ClassTransient, shape: retrieveWithCode,
		},
		{
			name:  "400 temporarily_unavailable",
			reply: reply{status: 400, contentType: jsonType, body: `{"error":"temporarily_unavailable"}`},
			want:  broker.ClassTransient, shape: retrieveWithCode,
		},
		{
			name:  "200 HTML from a hibernating instance",
			reply: reply{status: 200, contentType: htmlType, body: hibernatingHTML},
			want:  broker.ClassTransient, shape: plainError,
		},
		{
			name:  "401 HTML",
			reply: reply{status: 401, contentType: htmlType, body: hibernatingHTML},
			want:  broker.ClassTransient, shape: retrieveNoCode,
		},
		{
			name:  "200 without access_token",
			reply: reply{status: 200, contentType: jsonType, body: `{"token_type":"Bearer","expires_in":1799}`},
			want:  broker.ClassTransient, shape: plainError,
		},
		{
			name:  "200 empty body",
			reply: reply{status: 200, contentType: jsonType},
			want:  broker.ClassTransient, shape: plainError,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.reply.handler(t))
			defer srv.Close()
			var err error
			if tt.exchange {
				err = exchange(t, srv.URL, 5*time.Second)
			} else {
				err = refresh(t, srv.URL, 5*time.Second)
			}
			checkShape(t, err, tt.shape)
			if got := broker.ClassifyTokenError(err); got != tt.want {
				t.Errorf("ClassifyTokenError(%v) = %q, want %q", err, got, tt.want)
			}
			// Callers wrap before classifying.
			if got := broker.ClassifyTokenError(fmt.Errorf("refresh: %w", err)); got != tt.want {
				t.Errorf("wrapped: ClassifyTokenError = %q, want %q", got, tt.want)
			}
			noSecrets(t, err)
		})
	}
}

func TestClassifyTokenErrorTransport(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		err := refresh(t, url, 5*time.Second)
		checkShape(t, err, plainError)
		if got := broker.ClassifyTokenError(err); got != broker.ClassTransient {
			t.Errorf("ClassifyTokenError(%v) = %q, want transient", err, got)
		}
		noSecrets(t, err)
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release)
		err := refresh(t, srv.URL, 50*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a context deadline", err)
		}
		if got := broker.ClassifyTokenError(err); got != broker.ClassTransient {
			t.Errorf("ClassifyTokenError(%v) = %q, want transient", err, got)
		}
		noSecrets(t, err)
	})
}

func checkShape(t *testing.T, err error, want errShape) {
	t.Helper()
	var re *oauth2.RetrieveError
	got := plainError
	if errors.As(err, &re) {
		got = retrieveNoCode
		if re.ErrorCode != "" {
			got = retrieveWithCode
		}
	}
	if got != want {
		t.Errorf("x/oauth2 reported %T %v as shape %d, want %d", err, err, got, want)
	}
}

func noSecrets(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{testClientSecret, testRefreshToken, testCode} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains a secret", err)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	date := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		status int
		header map[string]string
		want   time.Duration
	}{
		{"429 seconds", 429, map[string]string{"Retry-After": "120"}, 2 * time.Minute},
		{"503 seconds with spaces", 503, map[string]string{"Retry-After": " 7 "}, 7 * time.Second},
		{"503 http date against the vendor's Date", 503, map[string]string{
			"Date":        date.Format(http.TimeFormat),
			"Retry-After": date.Add(90 * time.Second).Format(http.TimeFormat),
		}, 90 * time.Second},
		{"date in the past", 503, map[string]string{
			"Date":        date.Format(http.TimeFormat),
			"Retry-After": date.Add(-time.Hour).Format(http.TimeFormat),
		}, 0},
		{"zero", 429, map[string]string{"Retry-After": "0"}, 0},
		{"negative", 429, map[string]string{"Retry-After": "-5"}, 0},
		{"garbage", 429, map[string]string{"Retry-After": "soon"}, 0},
		{"absent", 429, nil, 0},
		{"absurdly large is clamped, not wrapped negative", 429, map[string]string{"Retry-After": "99999999999999999"}, time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(reply{status: tt.status, contentType: jsonType, header: tt.header, body: `{}`}.handler(t))
			defer srv.Close()
			err := refresh(t, srv.URL, 5*time.Second)
			if got := broker.RetryAfter(err); got != tt.want {
				t.Errorf("RetryAfter = %v, want %v", got, tt.want)
			}
			if got := broker.RetryAfter(fmt.Errorf("refresh: %w", err)); got != tt.want {
				t.Errorf("wrapped: RetryAfter = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("http date without a Date header uses the local clock", func(t *testing.T) {
		h := http.Header{}
		h.Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
		err := &oauth2.RetrieveError{Response: &http.Response{StatusCode: 503, Header: h}}
		if got := broker.RetryAfter(err); got < 58*time.Minute || got > time.Hour {
			t.Errorf("RetryAfter = %v, want about an hour", got)
		}
	})
	t.Run("not a token endpoint answer", func(t *testing.T) {
		for _, err := range []error{
			errors.New("dial tcp: connection refused"),
			context.DeadlineExceeded,
			&oauth2.RetrieveError{}, // no Response
		} {
			if got := broker.RetryAfter(err); got != 0 {
				t.Errorf("RetryAfter(%v) = %v, want 0", err, got)
			}
		}
	})
}
