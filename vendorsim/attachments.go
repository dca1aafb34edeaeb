package vendorsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxStoredFile bounds one stored attachment: the simulator keeps uploads in
// memory so that a download returns the same bytes.
const maxStoredFile = 64 << 20

// snAttachment is one ServiceNow sys_attachment record with its content.
type snAttachment struct {
	sysID, instance       string
	table, tableSysID     string
	fileName, contentType string
	hash                  string
	data                  []byte
	created               time.Time
}

// fileStore holds what callers created through the APIs: ServiceNow
// attachments and Confluence pages and attachments. It has its own lock, so
// that the token maps' lock is never held while a body is read.
type fileStore struct {
	mu       sync.Mutex
	sn       map[string]*snAttachment      // by sys_id
	pages    map[string]*confluenceContent // by id, created pages
	atlFiles map[string]*atlAttachment     // by id
	nextID   int
}

func newFileStore() *fileStore {
	return &fileStore{sn: map[string]*snAttachment{}, pages: map[string]*confluenceContent{},
		atlFiles: map[string]*atlAttachment{}, nextID: 900000}
}

// newID returns a fresh numeric content id, as Confluence's are.
func (f *fileStore) newID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	return strconv.Itoa(f.nextID)
}

var errTooLarge = errors.New("file exceeds the simulator's size limit")

// readFile reads an upload whole, hashing it, up to maxStoredFile.
func readFile(r io.Reader) ([]byte, string, error) {
	var buf bytes.Buffer
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(&buf, h), io.LimitReader(r, maxStoredFile+1))
	if err != nil {
		return nil, "", err
	}
	if n > maxStoredFile {
		return nil, "", errTooLarge
	}
	return buf.Bytes(), hex.EncodeToString(h.Sum(nil)), nil
}

// snAttachmentJSON is the record as the Attachment API answers it: every
// value a string, download_link an absolute instance URL.
func (s *Sim) snAttachmentJSON(a *snAttachment) map[string]string {
	base := s.snURL[a.instance]
	return map[string]string{
		"sys_id": a.sysID, "file_name": a.fileName, "table_name": a.table, "table_sys_id": a.tableSysID,
		"content_type": a.contentType, "size_bytes": strconv.Itoa(len(a.data)),
		"size_compressed": strconv.Itoa(len(a.data)), "compressed": "false", "hash": a.hash,
		"download_link":  base + "/api/now/attachment/" + a.sysID + "/file",
		"sys_created_on": a.created.UTC().Format(time.DateTime), "sys_created_by": "",
	}
}

// snAttachmentUpload is POST /api/now/attachment/file?table_name&table_sys_id&file_name
// with the file as the raw body and its type in Content-Type (all four
// required), answered 201 with the record and Location naming it.
func (s *Sim) snAttachmentUpload(w http.ResponseWriter, r *http.Request, in *Instance) {
	q := r.URL.Query()
	ct := r.Header.Get("Content-Type")
	if q.Get("table_name") == "" || q.Get("table_sys_id") == "" || q.Get("file_name") == "" || ct == "" {
		writeJSON(w, http.StatusBadRequest, snError("Failed to create the attachment. File part might be missing in the request.",
			"table_name, table_sys_id, file_name and a Content-Type header are required"))
		return
	}
	data, hash, err := readFile(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, snError("Exception while reading request", err.Error()))
		return
	}
	a := &snAttachment{sysID: randomSysID(), instance: in.Name, table: q.Get("table_name"), tableSysID: q.Get("table_sys_id"),
		fileName: q.Get("file_name"), contentType: ct, hash: hash, data: data, created: s.now()}
	s.files.mu.Lock()
	s.files.sn[a.sysID] = a
	s.files.mu.Unlock()
	w.Header().Set("Location", s.snURL[in.Name]+"/api/now/attachment/"+a.sysID)
	writeJSON(w, http.StatusCreated, map[string]any{"result": s.snAttachmentJSON(a)})
}

func (s *Sim) snAttachmentOf(r *http.Request, in *Instance) *snAttachment {
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	if a := s.files.sn[r.PathValue("id")]; a != nil && a.instance == in.Name {
		return a
	}
	return nil
}

func snAttachmentMissing(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, snError("Record doesn't exist or ACL restricts the record retrieval", nil))
}

// snAttachmentMeta is GET /api/now/attachment/{sys_id}.
func (s *Sim) snAttachmentMeta(w http.ResponseWriter, r *http.Request, in *Instance) {
	a := s.snAttachmentOf(r, in)
	if a == nil {
		snAttachmentMissing(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": s.snAttachmentJSON(a)})
}

// snAttachmentDownload is GET /api/now/attachment/{sys_id}/file: the stored
// bytes with their type. For an id never uploaded, ?size=N streams N bytes
// of a pattern without holding them in memory (the broker's streaming tests).
func (s *Sim) snAttachmentDownload(w http.ResponseWriter, r *http.Request, in *Instance) {
	if a := s.snAttachmentOf(r, in); a != nil {
		w.Header().Set("Content-Type", a.contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(a.data)))
		w.Header().Set("X-Attachment-Metadata", `{"file_name":`+strconv.Quote(a.fileName)+`}`)
		_, _ = w.Write(a.data)
		return
	}
	v := r.URL.Query().Get("size")
	if v == "" {
		snAttachmentMissing(w)
		return
	}
	size, err := strconv.ParseInt(v, 10, 64)
	if err != nil || size < 0 || size > 4<<30 {
		writeJSON(w, http.StatusBadRequest, snError("Invalid size", v))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	_, _ = io.CopyN(w, &patternReader{}, size)
}

// snAttachmentDelete is DELETE /api/now/attachment/{sys_id}.
func (s *Sim) snAttachmentDelete(w http.ResponseWriter, r *http.Request, in *Instance) {
	s.files.mu.Lock()
	a := s.files.sn[r.PathValue("id")]
	if a != nil && a.instance == in.Name {
		delete(s.files.sn, a.sysID)
	}
	s.files.mu.Unlock()
	if a == nil || a.instance != in.Name {
		snAttachmentMissing(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// patternReader yields 'a'..'z' repeated forever, so a test can check any
// byte of a download by its offset.
type patternReader struct{ off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte('a' + (p.off+int64(i))%26)
	}
	p.off += int64(len(b))
	return len(b), nil
}
