package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctreminiom/go-atlassian/confluence"
	confluencev2 "github.com/ctreminiom/go-atlassian/confluence/v2"
	"github.com/ctreminiom/go-atlassian/pkg/infra/models"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/brokertest"
)

// The client set-ups below are quoted verbatim in docs/clients.md;
// TestClientsGuideQuotesTheTests keeps the two the same.

func newWikiV1(brokerURL, jwt string) (*confluence.Client, error) {
	wiki, err := confluence.New(&http.Client{Timeout: 30 * time.Second}, brokerURL+"/proxy/confluence")
	if err != nil {
		return nil, err
	}
	wiki.Auth.SetBearerToken(jwt) // the caller's JWT: the broker puts the Atlassian token in its place
	return wiki, nil
}

func newWikiV2(brokerURL, jwt string) (*confluencev2.Client, error) {
	wiki, err := confluencev2.New(&http.Client{Timeout: 30 * time.Second}, brokerURL+"/proxy/confluence")
	if err != nil {
		return nil, err
	}
	wiki.Auth.SetBearerToken(jwt)
	return wiki, nil
}

// TestGoAtlassianThroughTheBroker drives the published Go client
// go-atlassian, configured only with the broker's URL and the caller's JWT,
// through the broker against the simulator: list and follow the next page,
// search with CQL, list spaces, create and update a page, upload a 2 MiB
// attachment right after the vendor stopped accepting the token (too large
// to replay: the broker refreshes, says so, and the client's own retry
// works), download the same bytes through a redirect, and delete. The vendor
// sees the connection's tokens only, never the caller's JWT.
func TestGoAtlassianThroughTheBroker(t *testing.T) {
	e := brokertest.Start(t, brokertest.WithSim(bigLog))
	e.MustConnect(e.Admin(acme), "confluence", "", "alice", broker.ResultConnected)
	jwt := e.Token(acme, "wiki-sync")
	ctx := context.Background()
	v1, err := newWikiV1(e.URL, jwt)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := newWikiV2(e.URL, jwt)
	if err != nil {
		t.Fatal(err)
	}

	// List, following the next page until there is none (7 pages in threes).
	var titles []string
	cursor, pages := "", 0
	for {
		chunk, res, err := v2.Page.Gets(ctx, nil, cursor, 3)
		if err != nil {
			t.Fatalf("Page.Gets(cursor %q): %v (%s)", cursor, err, answerOf(res))
		}
		pages++
		for _, p := range chunk.Results {
			titles = append(titles, p.Title)
		}
		if chunk.Links == nil || chunk.Links.Next == "" {
			break
		}
		if link := res.Header.Get("Link"); !strings.Contains(link, chunk.Links.Next) {
			t.Errorf("Link %q does not carry _links.next %q", link, chunk.Links.Next)
		}
		next, err := url.Parse(chunk.Links.Next)
		if err != nil {
			t.Fatal(err)
		}
		cursor = next.Query().Get("cursor")
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if pages != 3 || len(titles) != 7 {
		t.Fatalf("listed %d titles in %d pages, want 7 in 3", len(titles), pages)
	}

	found, res, err := v1.Search.Content(ctx, `type=page AND title~"page 2"`, &models.SearchContentOptions{Limit: 10})
	if err != nil || found.TotalSize != 1 || found.Results[0].Content.Title != titles[1] {
		t.Fatalf("CQL search: %v %+v (%s)", err, found, answerOf(res))
	}
	spaces, res, err := v2.Space.Bulk(ctx, nil, "", 10)
	if err != nil || len(spaces.Results) != 1 {
		t.Fatalf("spaces: %v (%s)", err, answerOf(res))
	}
	spaceID := spaces.Results[0].ID

	page, res, err := v2.Page.Create(ctx, &models.PageCreatePayloadScheme{SpaceID: spaceID, Status: "current",
		Title: "Runbook", Body: &models.PageBodyRepresentationScheme{Representation: "storage", Value: "<p>v1</p>"}})
	if err != nil {
		t.Fatalf("create: %v (%s)", err, answerOf(res))
	}
	id, _ := strconv.Atoi(page.ID)
	space, _ := strconv.Atoi(spaceID)
	page, res, err = v2.Page.Update(ctx, id, &models.PageUpdatePayloadScheme{ID: id, Status: "current", Title: "Runbook (edited)",
		SpaceID: space, Body: &models.PageBodyRepresentationScheme{Representation: "storage", Value: "<p>v2</p>"},
		Version: &models.PageUpdatePayloadVersionScheme{Number: 2, Message: "through the broker"}})
	if err != nil || page.Version.Number != 2 || page.Title != "Runbook (edited)" {
		t.Fatalf("update: %v %+v (%s)", err, page, answerOf(res))
	}

	// The vendor stops accepting the token just before a 2 MiB upload, which
	// is above the 1 MiB the broker keeps for a replay.
	file := make([]byte, 2<<20)
	_, _ = rand.Read(file)
	e.Sim.ExpireAccessTokens("atlassian")
	before := e.Sim.Counters().Atlassian.TokenCalls.RefreshToken
	_, res, err = v1.Content.Attachment.Create(ctx, page.ID, "current", "data.bin", bytes.NewReader(file))
	if !errors.Is(err, models.ErrUnauthorized) || res.Header.Get("X-Broker-Retry") != "refreshed" {
		t.Fatalf("upload on the refused token: want the vendor's 401 with X-Broker-Retry: refreshed, got %v %v", err, res.Header)
	}
	uploaded, res, err := v1.Content.Attachment.Create(ctx, page.ID, "current", "data.bin", bytes.NewReader(file))
	if err != nil || len(uploaded.Results) != 1 {
		t.Fatalf("the client's retry: %v (%s)", err, answerOf(res))
	}
	if n := e.Sim.Counters().Atlassian.TokenCalls.RefreshToken - before; n != 1 {
		t.Errorf("refreshes = %d, want exactly 1", n)
	}
	att := uploaded.Results[0].ID

	// Confluence answers the download with a redirect to an absolute URL of
	// the API gateway; the broker points it back at itself, and the client
	// follows it there with the same JWT.
	req, err := v1.NewRequest(ctx, http.MethodGet, "wiki/rest/api/content/"+page.ID+"/child/attachment/"+att+"/download", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err = v1.Call(req, nil)
	if err != nil || !bytes.Equal(res.Bytes.Bytes(), file) {
		t.Fatalf("download: %v, %d bytes, want the %d uploaded", err, res.Bytes.Len(), len(file))
	}
	if got := res.Request.URL.String(); !strings.HasPrefix(got, e.URL+"/proxy/confluence/wiki/download/attachments/") {
		t.Errorf("the redirect was followed to %s, not through the broker", got)
	}

	if res, err := v2.Attachment.Delete(ctx, att); err != nil {
		t.Fatalf("delete attachment: %v (%s)", err, answerOf(res))
	}
	if res, err := v2.Page.Delete(ctx, id); err != nil {
		t.Fatalf("delete page: %v (%s)", err, answerOf(res))
	}
	if _, _, err := v2.Page.Get(ctx, id, "", false, 0); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("page after delete: %v, want not found", err)
	}

	tokens := map[string]bool{}
	for _, r := range e.Sim.LastAPIRequests(0) {
		if strings.Contains(strings.Join(r.Header.Values("Authorization"), " "), jwt) || strings.Contains(r.Query, jwt) {
			t.Fatalf("the caller's JWT reached Atlassian: %s %s", r.Method, r.Path)
		}
		if strings.Contains(r.Path, "/wiki/") {
			tokens[r.Bearer] = true
		}
	}
	if len(tokens) != 2 {
		t.Errorf("Atlassian saw %d bearer tokens on the Confluence API, want 2 (before and after the refresh)", len(tokens))
	}
}

func answerOf(res *models.ResponseScheme) string {
	if res == nil {
		return "no answer"
	}
	return strconv.Itoa(res.Code) + " " + res.Bytes.String()
}
