package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
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
	"github.com/tokenbroker/tokenbroker/internal/testenv"
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
	e := testenv.StartBroker(t, testenv.WithSim(bigLog))
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

// snCall is a ServiceNow REST call through the broker with nothing but
// net/http: the broker's /proxy/servicenow in place of the instance, and the
// caller's JWT in place of a ServiceNow token.
func snCall(ctx context.Context, method, brokerURL, path, jwt string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, brokerURL+"/proxy/servicenow"+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return http.DefaultClient.Do(req)
}

// TestServiceNowPlainClientThroughTheBroker: the Table and Attachment APIs
// with a plain HTTP client: create and update a record, upload a 2 MiB
// attachment right after the instance stopped accepting the token (one
// refresh, the caller's retry works), follow the rewritten Location, download
// the same bytes, delete; a user-level connection through X-Broker-User.
func TestServiceNowPlainClientThroughTheBroker(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithSim(bigLog))
	e.MustConnect(e.Admin(acme), "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	// The role lets this service use its users' connections (X-Broker-User).
	jwt := e.Token(acme, "ticket-sync", "act-for-users")
	ctx := context.Background()
	call := func(method, path string, body io.Reader, ctype string, want int) (http.Header, map[string]any) {
		t.Helper()
		res, err := snCall(ctx, method, e.URL, path, jwt, body, ctype)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, b, want)
		}
		var out struct{ Result map[string]any }
		_ = json.Unmarshal(b, &out)
		return res.Header, out.Result
	}
	_, rec := call(http.MethodPost, "/api/now/table/incident", strings.NewReader(`{"short_description":"printer on fire"}`), "application/json", http.StatusCreated)
	id, _ := rec["sys_id"].(string)
	call(http.MethodPatch, "/api/now/table/incident/"+id, strings.NewReader(`{"state":"2"}`), "application/json", http.StatusOK)

	file := make([]byte, 2<<20)
	_, _ = rand.Read(file)
	upload := "/api/now/attachment/file?table_name=incident&table_sys_id=" + id + "&file_name=dump.bin"
	e.Sim.ExpireAccessTokens("servicenow")
	before := e.Sim.Counters().ServiceNow.TokenCalls.RefreshToken
	hdr, _ := call(http.MethodPost, upload, bytes.NewReader(file), "application/octet-stream", http.StatusUnauthorized)
	if hdr.Get("X-Broker-Retry") != "refreshed" || hdr.Get("X-Broker-Error") != "" {
		t.Fatalf("the refused upload: X-Broker-Retry %q, X-Broker-Error %q", hdr.Get("X-Broker-Retry"), hdr.Get("X-Broker-Error"))
	}
	hdr, att := call(http.MethodPost, upload, bytes.NewReader(file), "application/octet-stream", http.StatusCreated)
	if n := e.Sim.Counters().ServiceNow.TokenCalls.RefreshToken - before; n != 1 {
		t.Errorf("refreshes = %d, want exactly 1", n)
	}
	attID, _ := att["sys_id"].(string)
	loc := hdr.Get("Location")
	if loc != e.URL+"/proxy/servicenow/api/now/attachment/"+attID {
		t.Fatalf("Location = %q, want the broker's URL of the attachment", loc)
	}
	// download_link is in the body, which the broker does not rewrite.
	if att["download_link"] != e.Sim.ServiceNowURL("acme")+"/api/now/attachment/"+attID+"/file" {
		t.Errorf("download_link = %v", att["download_link"])
	}
	_, meta := call(http.MethodGet, strings.TrimPrefix(loc, e.URL+"/proxy/servicenow"), nil, "", http.StatusOK)
	if meta["size_bytes"] != strconv.Itoa(len(file)) {
		t.Errorf("attachment record: %v", meta)
	}
	res, err := snCall(ctx, http.MethodGet, e.URL, "/api/now/attachment/"+attID+"/file", jwt, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Equal(got, file) {
		t.Fatalf("download: %d, %d bytes, want the %d uploaded", res.StatusCode, len(got), len(file))
	}
	call(http.MethodDelete, "/api/now/attachment/"+attID, nil, "", http.StatusNoContent)
	call(http.MethodDelete, "/api/now/table/incident/"+id, nil, "", http.StatusNoContent)

	// A user-level connection: the same call, with X-Broker-User.
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/proxy/servicenow/api/now/table/incident?sysparm_limit=1", nil)
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("X-Broker-User", "u1") // the user-level connection of user u1
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	userTok := stored(t, e, broker.Key{Account: acme, Vendor: "servicenow", UserID: "u1"}).Tokens.AccessToken
	if res.StatusCode != http.StatusOK || e.Sim.LastAPIRequests(1)[0].Bearer != userTok {
		t.Errorf("user-level call: %d, vendor saw %q", res.StatusCode, e.Sim.LastAPIRequests(1)[0].Bearer)
	}
	// A user without a connection is the broker's own 404.
	req.Header.Set("X-Broker-User", "nobody")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || res.Header.Get("X-Broker-Error") != "not_connected" {
		t.Errorf("unknown user: %d %q", res.StatusCode, res.Header.Get("X-Broker-Error"))
	}

	for _, r := range e.Sim.LastAPIRequests(0) {
		if strings.Contains(strings.Join(r.Header.Values("Authorization"), " "), jwt) {
			t.Fatalf("the caller's JWT reached the instance: %s %s", r.Method, r.Path)
		}
	}
}
