package node

import (
	"bytes"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"parley/web"
)

// The web chat app (web/): the page at GET /, its assets under /assets/
// (names carry a hash of their content, so they are cached for good), and
// GET /v1/config, which tells the page where the WebSocket is (another
// port, or a path of the page's own origin behind a reverse proxy).
func (a *httpAPI) webRoutes(mux *http.ServeMux) {
	files := web.Dist()
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		return // a build without the app: the API alone
	}
	started := time.Now()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", a.webCSP(r))
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		http.ServeContent(w, r, "index.html", started, bytes.NewReader(index))
	})
	mux.HandleFunc("GET /assets/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		b, err := fs.ReadFile(files, "assets/"+name)
		if err != nil || strings.HasPrefix(name, ".") {
			writeError(w, http.StatusNotFound, "not_found", "no such asset")
			return
		}
		h := w.Header()
		ct := mime.TypeByExtension(path.Ext(name))
		if strings.HasSuffix(name, ".js") {
			ct = "text/javascript; charset=utf-8"
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, name, started, bytes.NewReader(b))
	})
	// The service worker (Web Push notifications) keeps one URL at the
	// root, so that it controls the page; browsers revalidate it.
	if sw, err := fs.ReadFile(files, "sw.js"); err == nil {
		mux.HandleFunc("GET /sw.js", func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", "text/javascript; charset=utf-8")
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Content-Security-Policy", "default-src 'none'")
			http.ServeContent(w, r, "sw.js", started, bytes.NewReader(sw))
		})
	}
	// A browser cannot read why a WebSocket handshake failed: a page whose
	// handshakes keep failing asks here whether its token still holds
	// (204) or was refused (401: log in again).
	mux.HandleFunc("GET /v1/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if _, _, ok := a.bearer(w, r); ok {
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, map[string]any{"ws_urls": a.webWSURLs(r)})
	})
}

// webWSURLs are the WebSocket URLs the page connects to: Config.WebWSURLs
// (a list, or "@file" naming a file with one URL per line, read at each
// request so that a deployment can change it without a restart), else this
// node's WebSocket port on the host the page was loaded from.
func (a *httpAPI) webWSURLs(r *http.Request) []string {
	var urls []string
	for _, s := range a.cfg.WebWSURLs {
		if file, ok := strings.CutPrefix(s, "@"); ok {
			b, err := os.ReadFile(file)
			if err != nil {
				a.log.Warn("web: cannot read the WebSocket URLs file", "file", file, "err", err)
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					urls = append(urls, line)
				}
			}
			continue
		}
		urls = append(urls, s)
	}
	if len(urls) > 0 {
		return urls
	}
	_, port, _ := net.SplitHostPort(a.ws.Addr())
	host := pageHost(r)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		host, _, _ = net.SplitHostPort(a.ws.Addr())
	}
	return []string{"ws://" + net.JoinHostPort(strings.Trim(host, "[]"), port) + a.cfg.WSPath}
}

// webCSP is the page's Content-Security-Policy: its own scripts and
// styles only, no inline code, no framing, and connections to its own
// origin and the WebSocket URLs of /v1/config.
func (a *httpAPI) webCSP(r *http.Request) string {
	connect := []string{"'self'"}
	for _, s := range a.webWSURLs(r) {
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		if u.Host == "" { // a path on the page's origin (behind a proxy)
			connect = append(connect, "ws://"+pageHost(r), "wss://"+pageHost(r))
			continue
		}
		connect = append(connect, u.Scheme+"://"+u.Host)
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
		"connect-src " + strings.Join(connect, " ") + "; manifest-src 'self'; worker-src 'self'; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// pageHost is the request's Host if it is a plain host[:port], else "":
// it is written into URLs and a header, so nothing else may pass.
func pageHost(r *http.Request) string {
	for _, c := range r.Host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return ""
		}
	}
	return r.Host
}
