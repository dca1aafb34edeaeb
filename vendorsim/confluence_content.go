package vendorsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The Confluence content that callers create, as Atlassian documents the
// REST APIs: v2 pages (create 200, update with the next version number,
// delete 204), v1 attachments (multipart upload with X-Atlassian-Token:
// no-check, download through a redirect), CQL search and v2 spaces.

// simSpaceID and simSpaceKey name the one space every site has.
const (
	simSpaceID  = "98306"
	simSpaceKey = "SIM"
)

type confluenceContent struct {
	id, cloud, spaceID, title, status string
	representation, body              string
	version                           int
	created                           time.Time
}

type atlAttachment struct {
	id, cloud, pageID, title, mediaType string
	data                                []byte
	created                             time.Time
}

// confluenceContentRoute serves the content routes; it reports false for a
// path it does not know, which atlConfluence then answers. Each route needs
// one of the scopes Atlassian documents for it (classic or granular, see
// docs/vendor-notes.md); without one the gateway's scope mismatch answers.
func (s *Sim) confluenceContentRoute(w http.ResponseWriter, r *http.Request, site *Site, p atlPrincipal, rest string) bool {
	seg := strings.Split(rest, "/")
	is := func(method string, pattern ...string) bool {
		if r.Method != method || len(seg) != len(pattern) {
			return false
		}
		for i, p := range pattern {
			if p != "*" && p != seg[i] {
				return false
			}
		}
		return true
	}
	var scopes []string
	var serve func()
	switch {
	case is("POST", "wiki", "api", "v2", "pages"):
		scopes, serve = []string{"write:page:confluence"}, func() { s.confluenceCreatePage(w, r, site) }
	case is("PUT", "wiki", "api", "v2", "pages", "*"):
		scopes, serve = []string{"write:page:confluence"}, func() { s.confluenceUpdatePage(w, r, site, seg[4]) }
	case is("DELETE", "wiki", "api", "v2", "pages", "*"):
		scopes, serve = []string{"delete:page:confluence"}, func() { s.confluenceDelete(w, site, seg[4], true) }
	case is("GET", "wiki", "api", "v2", "spaces"):
		scopes, serve = []string{"read:space:confluence"}, func() {
			writeJSON(w, http.StatusOK, map[string]any{"results": []map[string]any{{"id": simSpaceID, "key": simSpaceKey,
				"name": "Simulated space", "type": "global", "status": "current", "homepageId": nil}}, "_links": map[string]string{}})
		}
	case is("GET", "wiki", "api", "v2", "attachments", "*"):
		scopes, serve = []string{"read:attachment:confluence"}, func() { s.confluenceAttachmentV2(w, site, seg[4]) }
	case is("DELETE", "wiki", "api", "v2", "attachments", "*"):
		scopes, serve = []string{"delete:attachment:confluence"}, func() { s.confluenceDelete(w, site, seg[4], false) }
	case is("POST", "wiki", "rest", "api", "content", "*", "child", "attachment"):
		scopes, serve = []string{"write:confluence-file", "write:attachment:confluence"}, func() { s.confluenceUpload(w, r, site, seg[4]) }
	case is("GET", "wiki", "rest", "api", "content", "*", "child", "attachment"):
		scopes, serve = []string{"read:confluence-content.summary", "read:attachment:confluence"}, func() { s.confluenceAttachments(w, site, seg[4]) }
	case is("GET", "wiki", "rest", "api", "content", "*", "child", "attachment", "*", "download"):
		scopes, serve = []string{"readonly:content.attachment:confluence", "read:attachment:confluence"},
			func() { s.confluenceDownloadRedirect(w, site, seg[4], seg[7]) }
	case is("GET", "wiki", "download", "attachments", "*", "*"):
		scopes, serve = []string{"readonly:content.attachment:confluence", "read:attachment:confluence"},
			func() { s.confluenceDownload(w, site, seg[3], seg[4]) }
	case is("GET", "wiki", "rest", "api", "search"):
		scopes, serve = []string{"search:confluence", "read:content-details:confluence"}, func() { s.confluenceSearch(w, r, site) }
	default:
		return false
	}
	if !slices.ContainsFunc(scopes, func(sc string) bool { return hasScope(p.scope, sc) }) {
		s.atlScopeMismatch(w, site.CloudID)
		return true
	}
	serve()
	return true
}

func confluenceV2Error(w http.ResponseWriter, status int, code, title string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"status": status, "code": code, "title": title, "detail": nil}}})
}

type pageBody struct {
	ID      json.RawMessage `json:"id"`
	SpaceID json.RawMessage `json:"spaceId"`
	Status  string          `json:"status"`
	Title   string          `json:"title"`
	Body    *struct {
		Representation string `json:"representation"`
		Value          string `json:"value"`
	} `json:"body"`
	Version *struct {
		Number int `json:"number"`
	} `json:"version"`
}

// jsonID reads an id that clients send as a string or as a number.
func jsonID(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

func readPageBody(w http.ResponseWriter, r *http.Request) (pageBody, bool) {
	var b pageBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&b); err != nil {
		confluenceV2Error(w, http.StatusBadRequest, "INVALID_REQUEST_PARAMETER", "Invalid JSON body")
		return b, false
	}
	return b, true
}

func (c *confluenceContent) v2JSON() map[string]any {
	out := map[string]any{"id": c.id, "status": c.status, "title": c.title, "spaceId": c.spaceID, "parentId": nil,
		"createdAt": c.created.UTC().Format(time.RFC3339), "version": map[string]any{"number": c.version},
		"_links": map[string]string{"webui": "/spaces/" + simSpaceKey + "/pages/" + c.id}}
	if c.representation != "" {
		out["body"] = map[string]any{c.representation: map[string]string{"representation": c.representation, "value": c.body}}
	}
	return out
}

func (s *Sim) confluenceCreatePage(w http.ResponseWriter, r *http.Request, site *Site) {
	b, ok := readPageBody(w, r)
	if !ok {
		return
	}
	if jsonID(b.SpaceID) != simSpaceID || strings.TrimSpace(b.Title) == "" {
		confluenceV2Error(w, http.StatusBadRequest, "INVALID_REQUEST_PARAMETER", "spaceId of an existing space and a title are required")
		return
	}
	c := &confluenceContent{id: s.files.newID(), cloud: site.CloudID, spaceID: simSpaceID, title: b.Title,
		status: "current", version: 1, created: s.now()}
	if b.Status == "draft" {
		c.status = "draft"
	}
	if b.Body != nil {
		c.representation, c.body = b.Body.Representation, b.Body.Value
	}
	s.files.mu.Lock()
	s.files.pages[c.id] = c
	out := c.v2JSON()
	s.files.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// createdPages are the site's created pages in creation order, as v2 JSON.
func (s *Sim) createdPages(site *Site) []map[string]any {
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	var list []*confluenceContent
	for _, c := range s.files.pages {
		if c.cloud == site.CloudID {
			list = append(list, c)
		}
	}
	slices.SortFunc(list, func(a, b *confluenceContent) int { return strings.Compare(a.id, b.id) })
	out := make([]map[string]any, 0, len(list))
	for _, c := range list {
		out = append(out, c.v2JSON())
	}
	return out
}

// confluencePage is a created page of site; s.files.mu must be held.
func (s *Sim) confluencePage(site *Site, id string) *confluenceContent {
	if c := s.files.pages[id]; c != nil && c.cloud == site.CloudID {
		return c
	}
	return nil
}

// confluenceUpdatePage needs the next version number, as Confluence does.
func (s *Sim) confluenceUpdatePage(w http.ResponseWriter, r *http.Request, site *Site, id string) {
	b, ok := readPageBody(w, r)
	if !ok {
		return
	}
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	c := s.confluencePage(site, id)
	switch {
	case c == nil:
		confluenceV2Error(w, http.StatusNotFound, "NOT_FOUND", "Not Found")
	case jsonID(b.ID) != id || b.Title == "" || b.Version == nil:
		confluenceV2Error(w, http.StatusBadRequest, "INVALID_REQUEST_PARAMETER", "id, title and version are required")
	case b.Version.Number != c.version+1:
		confluenceV2Error(w, http.StatusConflict, "CONFLICT", "Version must be incremented on update. Current version is: "+strconv.Itoa(c.version))
	default:
		c.title, c.version = b.Title, b.Version.Number
		if b.Status != "" {
			c.status = b.Status
		}
		if b.Body != nil {
			c.representation, c.body = b.Body.Representation, b.Body.Value
		}
		writeJSON(w, http.StatusOK, c.v2JSON())
	}
}

// confluenceDelete deletes a created page (with its attachments) or an attachment.
func (s *Sim) confluenceDelete(w http.ResponseWriter, site *Site, id string, page bool) {
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	if page {
		if s.confluencePage(site, id) == nil {
			confluenceV2Error(w, http.StatusNotFound, "NOT_FOUND", "Not Found")
			return
		}
		delete(s.files.pages, id)
		for k, a := range s.files.atlFiles {
			if a.pageID == id {
				delete(s.files.atlFiles, k)
			}
		}
	} else {
		if a := s.files.atlFiles[id]; a == nil || a.cloud != site.CloudID {
			confluenceV2Error(w, http.StatusNotFound, "NOT_FOUND", "Not Found")
			return
		}
		delete(s.files.atlFiles, id)
	}
	w.WriteHeader(http.StatusNoContent)
}

// confluenceUpload is the v1 multipart upload: the "file" part is stored,
// other parts (comment, minorEdit) are read and ignored.
func (s *Sim) confluenceUpload(w http.ResponseWriter, r *http.Request, site *Site, pageID string) {
	if r.Header.Get("X-Atlassian-Token") != "no-check" {
		writeJSON(w, http.StatusForbidden, map[string]any{"statusCode": 403, "message": "XSRF check failed"})
		return
	}
	s.files.mu.Lock()
	page := s.confluencePage(site, pageID)
	s.files.mu.Unlock()
	if page == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"statusCode": 404, "message": "No content with id " + pageID})
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "multipart/form-data expected"})
		return
	}
	var created []*atlAttachment
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "malformed multipart body"})
			return
		}
		if part.FormName() != "file" {
			_, _ = io.Copy(io.Discard, part)
			continue
		}
		data, _, err := readFile(part)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": err.Error()})
			return
		}
		mt := part.Header.Get("Content-Type")
		if mt == "" {
			mt = "application/octet-stream"
		}
		created = append(created, &atlAttachment{id: "att" + s.files.newID(), cloud: site.CloudID, pageID: pageID,
			title: part.FileName(), mediaType: mt, data: data, created: s.now()})
	}
	if len(created) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "no file part"})
		return
	}
	results := make([]map[string]any, 0, len(created))
	s.files.mu.Lock()
	for _, a := range created {
		s.files.atlFiles[a.id] = a
		results = append(results, s.attachmentV1JSON(site, a))
	}
	s.files.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "start": 0, "limit": 50, "size": len(results),
		"_links": map[string]string{"base": site.URL + "/wiki", "context": "/wiki"}})
}

func downloadPath(a *atlAttachment) string {
	return "/download/attachments/" + a.pageID + "/" + url.PathEscape(a.title) + "?version=1&api=v2"
}

func (s *Sim) attachmentV1JSON(site *Site, a *atlAttachment) map[string]any {
	return map[string]any{"id": a.id, "type": "attachment", "status": "current", "title": a.title,
		"version":    map[string]any{"number": 1},
		"extensions": map[string]any{"mediaType": a.mediaType, "fileSize": len(a.data)},
		"container":  map[string]any{"id": a.pageID, "type": "page"},
		"_links": map[string]string{"download": downloadPath(a), "webui": "/pages/viewpageattachments.action?pageId=" + a.pageID,
			"self": site.URL + "/wiki/rest/api/content/" + a.id}}
}

func (s *Sim) confluenceAttachments(w http.ResponseWriter, site *Site, pageID string) {
	s.files.mu.Lock()
	var list []*atlAttachment
	for _, a := range s.files.atlFiles {
		if a.cloud == site.CloudID && a.pageID == pageID {
			list = append(list, a)
		}
	}
	slices.SortFunc(list, func(a, b *atlAttachment) int { return strings.Compare(a.id, b.id) })
	results := make([]map[string]any, 0, len(list))
	for _, a := range list {
		results = append(results, s.attachmentV1JSON(site, a))
	}
	s.files.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "start": 0, "limit": 50, "size": len(results),
		"_links": map[string]string{"base": site.URL + "/wiki", "context": "/wiki"}})
}

func (s *Sim) confluenceAttachmentV2(w http.ResponseWriter, site *Site, id string) {
	s.files.mu.Lock()
	a := s.files.atlFiles[id]
	s.files.mu.Unlock()
	if a == nil || a.cloud != site.CloudID {
		confluenceV2Error(w, http.StatusNotFound, "NOT_FOUND", "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": a.id, "status": "current", "title": a.title, "pageId": a.pageID,
		"mediaType": a.mediaType, "fileSize": len(a.data), "downloadLink": downloadPath(a),
		"version": map[string]any{"number": 1}, "_links": map[string]string{"download": downloadPath(a)}})
}

// confluenceDownloadRedirect answers the v1 download route as Confluence
// does, with a redirect to the file; Location is absolute under the API
// gateway's base for the site, which the broker must rewrite.
func (s *Sim) confluenceDownloadRedirect(w http.ResponseWriter, site *Site, pageID, id string) {
	s.files.mu.Lock()
	a := s.files.atlFiles[id]
	s.files.mu.Unlock()
	if a == nil || a.cloud != site.CloudID || a.pageID != pageID {
		writeJSON(w, http.StatusNotFound, map[string]any{"statusCode": 404, "message": "No attachment with id " + id})
		return
	}
	w.Header().Set("Location", s.atlAPIURL+"/ex/confluence/"+site.CloudID+"/wiki"+downloadPath(a))
	w.WriteHeader(http.StatusFound)
}

func (s *Sim) confluenceDownload(w http.ResponseWriter, site *Site, pageID, name string) {
	title, err := url.PathUnescape(name)
	if err != nil {
		title = name
	}
	s.files.mu.Lock()
	var found *atlAttachment
	for _, a := range s.files.atlFiles {
		if a.cloud == site.CloudID && a.pageID == pageID && a.title == title {
			found = a
		}
	}
	s.files.mu.Unlock()
	if found == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"statusCode": 404, "message": "Not Found"})
		return
	}
	w.Header().Set("Content-Type", found.mediaType)
	w.Header().Set("Content-Length", strconv.Itoa(len(found.data)))
	_, _ = w.Write(found.data)
}

// cqlTerm is the subset of CQL the simulator understands: type, space and
// title with = or ~, joined by AND. Other terms are ignored.
var cqlTerm = regexp.MustCompile(`(?i)\b(type|space|title)\s*(=|~)\s*"?([^"]*?)"?\s*(?:\bAND\b|$)`)

func (s *Sim) confluenceSearch(w http.ResponseWriter, r *http.Request, site *Site) {
	cql := r.URL.Query().Get("cql")
	if strings.TrimSpace(cql) == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "CQL query parameter is required"})
		return
	}
	type hit struct{ id, title string }
	var all []hit
	for _, pg := range s.confluencePages(site) {
		all = append(all, hit{pg.id, pg.title})
	}
	s.files.mu.Lock()
	var made []hit
	for _, c := range s.files.pages {
		if c.cloud == site.CloudID && c.status == "current" {
			made = append(made, hit{c.id, c.title})
		}
	}
	s.files.mu.Unlock()
	slices.SortFunc(made, func(a, b hit) int { return strings.Compare(a.id, b.id) })
	all = append(all, made...)
	results := []map[string]any{}
	for _, h := range all {
		ok := true
		for _, m := range cqlTerm.FindAllStringSubmatch(cql, -1) {
			field, op, val := strings.ToLower(m[1]), m[2], m[3]
			switch {
			case field == "type" && !strings.EqualFold(val, "page"),
				field == "space" && !strings.EqualFold(val, simSpaceKey),
				field == "title" && op == "=" && h.title != val,
				field == "title" && op == "~" && !strings.Contains(strings.ToLower(h.title), strings.ToLower(val)):
				ok = false
			}
		}
		if ok {
			results = append(results, map[string]any{"title": h.title, "excerpt": "", "entityType": "content",
				"url":     "/spaces/" + simSpaceKey + "/pages/" + h.id,
				"content": map[string]any{"id": h.id, "type": "page", "status": "current", "title": h.title}})
		}
	}
	limit := pageWindow(r.URL.Query())
	total := len(results)
	results = results[:min(limit, total)]
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "start": 0, "limit": limit, "size": len(results),
		"totalSize": total, "cqlQuery": cql, "searchDuration": 1,
		"_links": map[string]string{"base": site.URL + "/wiki", "context": "/wiki"}})
}
