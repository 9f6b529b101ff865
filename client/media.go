package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"parley/wire"
)

// Media: files go over HTTP (docs/PROTOCOL.md, Media), not the WebSocket:
// Upload stores one and returns its id, a send carries ids as attachments
// (SendAttachments), and Download fetches one.

// Media is what the server answers to an upload.
type Media struct {
	ID     string `json:"id"`
	Mime   string `json:"mime"`
	Size   uint64 `json:"size"`
	Width  uint64 `json:"width"`
	Height uint64 `json:"height"`
	Thumb  bool   `json:"thumb"`
	Index  uint64 `json:"idx"` // the log index of the upload: a session index (MinIndex)
}

// HTTPError is a refusal from the HTTP API: the status, and the code and
// message of its JSON body. Unwrap gives the *wire.Error, so Retryable and
// errors.As work as for WebSocket errors.
type HTTPError struct {
	Status     int
	Err        *wire.Error
	RetryAfter time.Duration // from Retry-After; 0 when absent
}

func (e *HTTPError) Error() string { return fmt.Sprintf("client: HTTP %d: %v", e.Status, e.Err) }
func (e *HTTPError) Unwrap() error { return e.Err }

// httpClient has no overall timeout: a file may take long; the caller's
// context bounds it.
var httpClient = &http.Client{}

// Upload streams r to the node at httpBase (its HTTP API, e.g.
// "http://127.0.0.1:7070") as a file named name (a display name; the
// server sanitizes it and sniffs the type from the bytes). It is not
// retried: r is consumed. The returned id goes into a send's attachments.
func Upload(ctx context.Context, httpBase, token string, r io.Reader, name string) (*Media, error) {
	u := strings.TrimRight(httpBase, "/") + "/v1/media"
	if name != "" {
		u += "?name=" + url.QueryEscape(name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	// The node refuses a file it will not take (size, quota, token)
	// before the body is sent.
	req.Header.Set("Expect", "100-continue")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return nil, httpError(resp)
	}
	var m Media
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("client: upload reply: %w", err)
	}
	return &m, nil
}

// DownloadOptions select what Download fetches.
type DownloadOptions struct {
	Thumb    bool   // the thumbnail instead of the file
	Range    string // a Range header, e.g. "bytes=0-99"; "" for the whole file
	MinIndex uint64 // Parley-Min-Index: the highest idx the caller has seen
}

// Download fetches a file (or its thumbnail) by id. The caller reads and
// closes the body; the response's status is 200, or 206 for a Range. Any
// other status is an *HTTPError (404 not_found for a file that does not
// exist or that the user may not see).
func Download(ctx context.Context, httpBase, token, id string, opt DownloadOptions) (*http.Response, error) {
	u := strings.TrimRight(httpBase, "/") + "/v1/media/" + url.PathEscape(id)
	if opt.Thumb {
		u += "?thumb=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if opt.Range != "" {
		req.Header.Set("Range", opt.Range)
	}
	if opt.MinIndex != 0 {
		req.Header.Set("Parley-Min-Index", strconv.FormatUint(opt.MinIndex, 10))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		return nil, httpError(resp)
	}
	return resp, nil
}

// httpError reads an error response.
func httpError(resp *http.Response) error {
	var body struct {
		Code    wire.Code `json:"code"`
		Message string    `json:"message"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	if body.Code == "" {
		body.Code = wire.CodeInternal
		if resp.StatusCode == http.StatusServiceUnavailable {
			body.Code = wire.CodeUnavailable
		}
	}
	e := &HTTPError{Status: resp.StatusCode, Err: &wire.Error{Code: body.Code, Message: body.Message}}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// SendAttachments posts a message carrying files (their ids from Upload,
// each with an optional name to show) to conv, with an optional text body;
// it retries as SendWithID does, under one new client message id.
func (c *Client) SendAttachments(ctx context.Context, conv uint64, body string, atts []wire.Attachment) (*wire.Reply, error) {
	cmid := NewClientMsgID()
	req := wire.Request{Type: wire.TypeSend, Conv: conv, ClientMsgID: cmid, Body: body, Att: atts}
	for attempt := 0; ; attempt++ {
		rep, err := c.Request(ctx, &req)
		if err == nil || !Retryable(err) {
			return rep, err
		}
		if !sleep(ctx, backoff(attempt, c.cfg.ReconnectMin, c.cfg.ReconnectMax)) {
			return nil, fmt.Errorf("client: send %s not confirmed: %w (last error: %w)", cmid, ctx.Err(), err)
		}
	}
}
