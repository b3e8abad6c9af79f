package audit

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress is told how far a long scan got, in stream sequences. The
// audit functions call it from one goroutine.
type Progress interface {
	// Start is called once with the stream's last sequence.
	Start(total uint64)
	// Set reports the last sequence read.
	Set(seq uint64)
	// Finish is called once at the end with the last sequence read.
	Finish(seq uint64)
}

// NewProgress returns a progress bar on w when w is a terminal, and nil
// otherwise: a bar in a log file or a pipe is noise.
func NewProgress(w *os.File, description string) Progress {
	if w == nil {
		return nil
	}
	fi, err := w.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &bar{w: w, description: description}
}

type bar struct {
	w           io.Writer
	description string
	b           *progressbar.ProgressBar
}

func (p *bar) Start(total uint64) {
	p.b = progressbar.NewOptions64(int64(total),
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(p.description),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
	)
}

func (p *bar) Set(seq uint64) {
	if p.b != nil {
		_ = p.b.Set64(int64(seq))
	}
}

func (p *bar) Finish(seq uint64) {
	if p.b != nil {
		_ = p.b.Set64(int64(seq))
		_ = p.b.Finish()
	}
}
