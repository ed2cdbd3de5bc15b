package mediator

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
)

// A national first sync, or a change that touches every worker, maps far
// more providers than a run should hold at once (a mapped provider is a few
// kilobytes). The providers mapped beyond Options.ChunkSize wait in a spill
// file, on disk beside the state, and are written chunk by chunk after the
// first: memory stays flat in the registry's size. The file is unlinked as
// soon as it is made, so a crash leaves nothing behind; the watermark has
// not moved past what it held, so the next run pulls it again.

// spilled is one provider waiting in the spill file: what the pull knew of
// it, as an item carries it.
type spilled struct {
	Mapping Mapping
	Rec     Record
	Raw     string
	Carried []string
}

func (e spilled) item() *item {
	return &item{Mapping: e.Mapping, rec: e.Rec, raw: e.Raw, carried: e.Carried, pulled: true}
}

// spill is a run's spill file, written during the pull and read back after.
type spill struct {
	f   *os.File
	buf *bufio.Writer
	enc *gob.Encoder
	n   int

	dec *gob.Decoder // reading back, once the pull is done
}

func newSpill(dir string) (*spill, error) {
	f, err := os.CreateTemp(dir, "mhero-spill-*")
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spill file: %w", err)
	}
	buf := bufio.NewWriterSize(f, 64<<10)
	return &spill{f: f, buf: buf, enc: gob.NewEncoder(buf)}, nil
}

// len is how many providers were spilled; a nil spill holds none.
func (s *spill) len() int {
	if s == nil {
		return 0
	}
	return s.n
}

func (s *spill) add(e spilled) error {
	if err := s.enc.Encode(&e); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	s.n++
	return nil
}

// rewind makes the next read start from the first provider spilled.
func (s *spill) rewind() error {
	if err := s.buf.Flush(); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	s.dec = gob.NewDecoder(bufio.NewReaderSize(s.f, 64<<10))
	return nil
}

// next reads up to n more providers, leaving out those skip names; none
// at the end of the file.
func (s *spill) next(n int, skip func(key string) bool) ([]*item, error) {
	var out []*item
	for len(out) < n {
		var e spilled
		if err := s.dec.Decode(&e); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("spill file: %w", err)
		}
		if !skip(e.Mapping.Key) {
			out = append(out, e.item())
		}
	}
	return out, nil
}

func (s *spill) close() {
	if s != nil {
		s.f.Close()
	}
}
