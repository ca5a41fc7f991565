package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/prezero/prezero/internal/bytesize"
	"github.com/prezero/prezero/internal/restore"
)

// startRestoreProgress shows a progress line on standard error while it is
// a terminal: bytes covered, the total if known (total >= 0), and the rate.
// The returned function stops it and clears the line.
func startRestoreProgress(w *restore.Writer, total int64) (stop func()) {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(os.Stderr, "\r\033[K")
				return
			case <-tick.C:
			}
			pos := w.Pos()
			line := bytesize.Human(pos)
			if total > 0 {
				line += fmt.Sprintf(" / %s (%.0f%%)", bytesize.Human(total), 100*float64(pos)/float64(total))
			}
			if s := time.Since(start).Seconds(); s > 0 {
				line += fmt.Sprintf("  %s/s", bytesize.Human(int64(float64(pos)/s)))
			}
			fmt.Fprintf(os.Stderr, "\r\033[Krestoring %s", line)
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
