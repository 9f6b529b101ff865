package bench

import (
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows a run's phases as they happen. Implementations are safe
// for concurrent use.
type Progress interface {
	// Phase starts a phase of total steps, ending the previous one.
	Phase(name string, total int64)
	// Add advances the phase by n steps.
	Add(n int64)
	// Set moves the phase to done steps and shows detail next to its name.
	Set(done int64, detail string)
	// Finish ends the phase.
	Finish()
}

// NoProgress shows nothing.
type NoProgress struct{}

func (NoProgress) Phase(string, int64) {}
func (NoProgress) Add(int64)           {}
func (NoProgress) Set(int64, string)   {}
func (NoProgress) Finish()             {}

// barProgress draws one progress bar per phase on a terminal.
type barProgress struct {
	w    io.Writer
	mu   sync.Mutex // guards bar and name; progressbar locks itself too, this orders phases
	bar  *progressbar.ProgressBar
	name string
}

// NewBarProgress returns a Progress drawing bars on w, which should be a
// terminal: bars redraw the line in place.
func NewBarProgress(w io.Writer) Progress { return &barProgress{w: w} }

func (p *barProgress) Phase(name string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finishLocked()
	p.name = name
	p.bar = progressbar.NewOptions64(max(total, 1),
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(name),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func (p *barProgress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Add64(n)
	}
}

func (p *barProgress) Set(done int64, detail string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		return
	}
	if detail != "" {
		p.bar.Describe(p.name + " " + detail)
	}
	_ = p.bar.Set64(min(done, p.bar.GetMax64()))
}

func (p *barProgress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finishLocked()
}

func (p *barProgress) finishLocked() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}
