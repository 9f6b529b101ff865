// Package pushtest holds fake push providers for tests: an FCM token and send
// endpoint, an APNs HTTP/2 server, a Web Push service and a webhook receiver.
// Each one checks requests the way the real service does (signatures, JWTs,
// encryption, schema) and rejects a malformed one with the real service's
// error, so a sender that drifts from the format fails its tests. Each fake
// generates its own keys and writes the credential files a sender is
// configured with into the test's temporary directory.
//
// The checks here are written independently of package push (the Web Push
// fake decrypts with its own RFC 8291 code), so a shared mistake cannot make
// both sides agree.
package pushtest

import (
	"net/http"
	"sync"
)

// Response is a scripted answer for one device: the fake answers every
// well-formed request for that device with it instead of success.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

// script holds scripted responses by device key; its mutex guards only the map.
type script struct {
	mu        sync.Mutex
	responses map[string]Response
	rejected  []string
}

func (s *script) set(key string, r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.responses == nil {
		s.responses = make(map[string]Response)
	}
	s.responses[key] = r
}

func (s *script) lookup(key string) (Response, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.responses[key]
	return r, ok
}

func (s *script) reject(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected = append(s.rejected, reason)
}

// Rejections lists why the fake refused malformed requests, oldest first; a
// test can print it when a send fails unexpectedly.
func (s *script) Rejections() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rejected...)
}

func write(w http.ResponseWriter, r Response) {
	for k, vs := range r.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(r.Status)
	w.Write([]byte(r.Body))
}
