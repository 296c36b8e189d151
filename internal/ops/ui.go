package ops

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
)

// taskAPIPath matches the UI API's task lists of a state
// (…/queues/{queue}/{state}_tasks) and its task details
// (…/queues/{queue}/tasks/{id}).
var taskAPIPath = regexp.MustCompile(`^` + regexp.QuoteMeta(UIPath) + `api/queues/[^/]+/(?:(active|pending|scheduled|retry|archived|completed)_tasks|tasks/[^/]+)$`)

// uiBundlePath matches the UI's application script (the file that holds
// uuidPrefix).
var uiBundlePath = regexp.MustCompile(`^` + regexp.QuoteMeta(UIPath) + `static/js/main\.[0-9a-f]+\.chunk\.js$`)

// uiHandler is asynqmon with three of otpq's changes: every task without a
// result (queued, retrying, dead-lettered…) leads its payload with its
// verdict's summary, as otpq status does (completed tasks lead their
// result with it: see FormatResultReceipt); and the task tables show a
// custom task ID whole (see PatchUIBundle); and the payload and result
// boxes wrap their lines, so that the tables fit the window (uiStyle).
func (s *Server) uiHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			s.ui.ServeHTTP(w, r)
			return
		}
		if m := taskAPIPath.FindStringSubmatch(r.URL.Path); m != nil {
			rec := record(s.ui, r)
			if rec.status == http.StatusOK {
				if body, err := summarizeTasks(rec.body.Bytes(), m[1]); err == nil {
					rec.body.Reset()
					rec.body.Write(body)
				}
			}
			rec.copyTo(w)
			return
		}
		if uiBundlePath.MatchString(r.URL.Path) {
			s.serveBundle(w, r)
			return
		}
		if strings.Contains(path.Base(r.URL.Path), ".") { // an asset
			s.ui.ServeHTTP(w, r)
			return
		}
		// The page itself (asynqmon serves it for every route of the app).
		rec := record(s.ui, r)
		// asynqmon sets no Content-Type for it: net/http sniffs one.
		if ct := rec.header.Get("Content-Type"); rec.status == http.StatusOK && (ct == "" || strings.HasPrefix(ct, "text/html")) {
			if page, ok := bytes.CutSuffix(bytes.TrimRight(rec.body.Bytes(), "\n"), []byte("</html>")); ok && bytes.Contains(page, []byte("</head>")) {
				page = bytes.Replace(page, []byte("</head>"), []byte(uiStyle+"</head>"), 1)
				rec.body.Reset()
				rec.body.Write(page)
				rec.body.WriteString("</html>")
			}
		}
		rec.copyTo(w)
	})
}

// uiStyle lets the payload and result boxes wrap their lines instead of
// scrolling sideways: asynqmon's boxes are up to 400 px wide each, and with
// two of them a task table is wider than a 1280 px window, so its right
// columns were cut off. Wrapped, the table fits the window.
const uiStyle = `<style>pre, pre code { white-space: pre-wrap !important; } table pre { min-width: 14em; }</style>`

// summarizeTasks rewrites a task list ({"tasks": [...], …}; state is the
// list's) or a task's details (state "": the task's own "state" field):
// each task without a result gets its verdict's summary before its
// payload.
func summarizeTasks(body []byte, state string) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, err
	}
	if state == "" {
		return json.Marshal(summarizeTask(doc, ""))
	}
	var tasks []map[string]json.RawMessage
	if err := json.Unmarshal(doc["tasks"], &tasks); err != nil {
		return nil, err
	}
	for i, t := range tasks {
		tasks[i] = summarizeTask(t, state)
	}
	raw, err := json.Marshal(tasks)
	if err != nil {
		return nil, err
	}
	doc["tasks"] = raw
	return json.Marshal(doc)
}

// summarizeTask puts the verdict's summary of t, in state (its own "state"
// field when ""), before its payload, unless t has a result (which leads
// with it).
func summarizeTask(t map[string]json.RawMessage, state string) map[string]json.RawMessage {
	var result, payload, lastErr string
	var retried int
	_ = json.Unmarshal(t["result"], &result)
	_ = json.Unmarshal(t["payload"], &payload)
	_ = json.Unmarshal(t["error_message"], &lastErr)
	_ = json.Unmarshal(t["retried"], &retried)
	if state == "" {
		_ = json.Unmarshal(t["state"], &state)
	}
	if result != "" || state == "" {
		return t
	}
	f := outcome.Facts{Verdict: outcome.Of("", state, "")}
	switch f.Verdict {
	case outcome.VerdictDeadLetter:
		// asynq does not count the attempt that dead-lettered the task.
		f.ErrorText, f.Attempts = engagelab.Printable(lastErr, 200), retried+1
	case outcome.Retrying:
		f.ErrorText, f.Attempts = engagelab.Printable(lastErr, 200), retried
	}
	var v view
	v.summary(f.Summary())
	raw, err := json.Marshal(v.String() + "\n\n" + payload)
	if err == nil {
		t["payload"] = raw
	}
	return t
}

// uuidPrefixJS is asynqmon's uuidPrefix as its build minifies it:
//
//	function cn(e){var t=e.indexOf("-");return-1===t?e:e.substr(0,t)}
//
// It cuts every task ID at its first "-", so that a UUID shows as its
// first 8 characters, and a custom ID such as "order-1" as "order".
var uuidPrefixJS = regexp.MustCompile(`function ([\w$]+)\(([\w$]+)\)\{var ([\w$]+)=([\w$]+)\.indexOf\("-"\);return-1===([\w$]+)\?([\w$]+):([\w$]+)\.substr\(0,([\w$]+)\)\}`)

// ErrUIBundle is returned by PatchUIBundle when asynqmon's script no
// longer holds the function it replaces.
var ErrUIBundle = errors.New("asynqmon's uuidPrefix not found in its UI script")

// PatchUIBundle replaces asynqmon's uuidPrefix in its UI script js with
// one that shortens only UUIDs (to their first 8 characters, as before)
// and shows any other task ID whole. Exactly one such function must be
// found, else ErrUIBundle (a new asynqmon: look at its ui/src/utils.ts).
func PatchUIBundle(js []byte) ([]byte, error) {
	found := uuidPrefixJS.FindAllSubmatchIndex(js, -1)
	if len(found) != 1 {
		return nil, errors.Join(ErrUIBundle, errors.New("matches: "+strconv.Itoa(len(found))))
	}
	m := uuidPrefixJS.FindSubmatch(js)
	arg, idx := string(m[2]), string(m[3])
	for _, g := range [][]byte{m[4], m[6], m[7]} {
		if string(g) != arg {
			return nil, ErrUIBundle
		}
	}
	if string(m[5]) != idx || string(m[8]) != idx {
		return nil, ErrUIBundle
	}
	repl := `function ` + string(m[1]) + `(` + arg + `){return/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(` + arg + `)?` + arg + `.substr(0,8):` + arg + `}`
	out := make([]byte, 0, len(js)+len(repl))
	out = append(out, js[:found[0][0]]...)
	out = append(out, repl...)
	return append(out, js[found[0][1]:]...), nil
}

// serveBundle serves asynqmon's UI script patched by PatchUIBundle,
// patched once per path; when the patch does not apply, the script as it
// is, with one warning.
func (s *Server) serveBundle(w http.ResponseWriter, r *http.Request) {
	s.bundleMu.Lock()
	b, ok := s.bundles[r.URL.Path]
	s.bundleMu.Unlock()
	if !ok {
		rec := record(s.ui, r)
		if rec.status != http.StatusOK {
			rec.copyTo(w)
			return
		}
		js, err := PatchUIBundle(rec.body.Bytes())
		if err != nil {
			s.log.Warn("web UI: custom task IDs show cut at their first '-'", slog.String("component", "ops"), slog.String("error", err.Error()))
			js = rec.body.Bytes()
		}
		b = patchedScript{header: rec.header, js: js}
		s.bundleMu.Lock()
		s.bundles[r.URL.Path] = b
		s.bundleMu.Unlock()
	}
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	_, _ = w.Write(b.js)
}

// patchedScript is a patched UI script and its headers.
type patchedScript struct {
	header http.Header
	js     []byte
}

// recorder keeps a response in memory.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

// record serves r with h into memory.
func record(h http.Handler, r *http.Request) *recorder {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	h.ServeHTTP(rec, r)
	return rec
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func (r *recorder) WriteHeader(status int) { r.status = status }

// copyTo sends the recorded response to w.
func (r *recorder) copyTo(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes())
}
