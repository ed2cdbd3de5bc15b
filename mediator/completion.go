package mediator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/openhie/mhero-mediator/openhim"
)

// bucketCompletions holds the OpenHIM transactions answered "Processing":
// transaction id → the final response to PUT, or empty while the run goes
// on. Kept in the state, a completion outlives a restart.
var bucketCompletions = []byte("completions")

// Completer finishes OpenHIM transactions that were answered "Processing"
// because their run outlasted the answer budget: it PUTs each final
// response with backoff until core takes it, from the state, so that a
// restart neither loses a completion nor leaves a transaction Processing
// for ever.
type Completer struct {
	State *State
	// Put sends the final response (openhim.Client.PutTransaction).
	Put         func(ctx context.Context, id string, r openhim.Response) error
	MediatorURN string
	Logger      *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts; zero means
	// 1 s and 5 min.
	MinBackoff, MaxBackoff time.Duration
	// OnDone, when set, hears each transaction completed (for tests).
	OnDone func(id string)

	once sync.Once
	wake chan struct{}
}

func (c *Completer) wakeup() chan struct{} {
	c.once.Do(func() { c.wake = make(chan struct{}, 1) })
	return c.wake
}

func (c *Completer) signal() {
	select {
	case c.wakeup() <- struct{}{}:
	default:
	}
}

// started records a transaction answered "Processing" whose run goes on.
func (c *Completer) started(id string) error { return c.State.putCompletion(id, nil) }

// complete records a transaction's final response and wakes the sender.
func (c *Completer) complete(id string, r openhim.Response) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := c.State.putCompletion(id, data); err != nil {
		return err
	}
	c.signal()
	return nil
}

// Run sends every recorded completion until ctx ends. Transactions whose run
// was going on when the service last stopped are completed as failed: their
// work is pending in the state, and the next poll runs it.
func (c *Completer) Run(ctx context.Context) error {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	wake := c.wakeup()
	minWait, maxWait := c.MinBackoff, c.MaxBackoff
	if minWait <= 0 {
		minWait = time.Second
	}
	if maxWait <= 0 {
		maxWait = 5 * time.Minute
	}
	// Run starts before the service can answer a trigger Processing, so
	// a run in progress here is one a stop cut.
	if err := c.failInterrupted(); err != nil {
		return err
	}
	wait := minWait
	for {
		failed, err := c.sendAll(ctx)
		if err != nil || ctx.Err() != nil {
			return err
		}
		var timer <-chan time.Time
		if failed {
			timer = time.After(wait)
			wait = min(2*wait, maxWait)
		} else {
			wait = minWait
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-timer:
		}
	}
}

// Drain makes one pass over the recorded completions, as a stopping
// service does after its last runs; what it cannot send stays in the state
// for the next start.
func (c *Completer) Drain(ctx context.Context) error {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	_, err := c.sendAll(ctx)
	return err
}

// sendAll PUTs every final response recorded and tells whether one failed
// in a way worth trying again. An update core can never take (the
// transaction is gone, or core refuses its content) is dropped.
func (c *Completer) sendAll(ctx context.Context) (failed bool, err error) {
	pending, err := c.State.completions()
	if err != nil {
		return false, err
	}
	for id, data := range pending {
		if data == nil {
			continue // its run goes on
		}
		var r openhim.Response
		if err := json.Unmarshal(data, &r); err != nil {
			return false, fmt.Errorf("state: completion %s: %w", id, err)
		}
		err := c.Put(ctx, id, r)
		switch {
		case err == nil:
			c.Logger.Info("OpenHIM transaction completed", "transaction", id, "status", r.Status)
		case ctx.Err() != nil:
			return false, nil
		case permanent(err):
			c.Logger.Error("OpenHIM will never take this transaction's completion; dropped", "transaction", id, "err", err)
		default:
			c.Logger.Warn("OpenHIM transaction not completed yet; trying again", "transaction", id, "err", err)
			failed = true
			continue
		}
		if err := c.State.deleteCompletion(id); err != nil {
			return false, err
		}
		if c.OnDone != nil {
			c.OnDone(id)
		}
	}
	return failed, nil
}

// permanent tells a refusal no retry can change: a 4xx other than an auth
// or rate refusal (the transaction is gone, or core refuses the update).
func permanent(err error) bool {
	var se *openhim.StatusError
	if !errors.As(err, &se) {
		return false
	}
	switch se.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return se.StatusCode >= 400 && se.StatusCode < 500
}

// failInterrupted completes as failed the transactions whose run a stop of
// the service cut.
func (c *Completer) failInterrupted() error {
	pending, err := c.State.completions()
	if err != nil {
		return err
	}
	for id, data := range pending {
		if data != nil {
			continue
		}
		now := time.Now().UTC()
		r := openhim.Response{
			MediatorURN: c.MediatorURN, Status: openhim.StatusFailed,
			Response: openhim.HTTPResponse{Status: http.StatusInternalServerError, Headers: map[string]string{"content-type": "text/plain"},
				Body: "the service stopped during this run; its work is pending in the state and the next poll runs it", Timestamp: now},
			Properties: map[string]string{"error": "the service stopped during the run"},
		}
		if err := c.complete(id, r); err != nil {
			return err
		}
	}
	return nil
}

// processingResponse answers a trigger whose run outlasts the answer budget.
func processingResponse(urn string) openhim.Response {
	return openhim.Response{
		MediatorURN: urn, Status: openhim.StatusProcessing,
		Response: openhim.HTTPResponse{Status: http.StatusAccepted, Headers: map[string]string{"content-type": "application/json"},
			Body: `{"status":"Processing","message":"the run goes on; this transaction is completed when it ends"}`, Timestamp: time.Now().UTC()},
		Properties: map[string]string{"processing": "the run outlasted the answer budget and goes on"},
	}
}

func (s *State) putCompletion(id string, data []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketCompletions)
		if err != nil {
			return err
		}
		if data == nil {
			data = []byte{}
		}
		return b.Put([]byte(id), data)
	})
	if err != nil {
		return fmt.Errorf("state: completion %s: %w", id, err)
	}
	return nil
}

func (s *State) deleteCompletion(id string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketCompletions); b != nil {
			return b.Delete([]byte(id))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: completion %s: %w", id, err)
	}
	return nil
}

// completions lists the recorded completions: nil data while the run goes
// on.
func (s *State) completions() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCompletions)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) == 0 {
				out[string(k)] = nil
			} else {
				out[string(k)] = append([]byte{}, v...)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: completions: %w", err)
	}
	return out, nil
}
