package mediator

import (
	"context"
	"slices"
	"sync"

	"github.com/openhie/mhero-mediator/rapidpro"
)

// dispatch handles the items in order with up to w.concurrency of them
// waiting on RapidPro at once. Items that share a provider key, a phone or a
// contact wait for each other, in their order: each one's outcome (a phone
// let go, a contact adopted) decides the next one's. The caller holds w.mu;
// every RapidPro call releases it (see unlockedOps).
func (w *writer) dispatch(ctx context.Context, items []*item) error {
	n := max(w.concurrency, 1)
	cond := sync.NewCond(&w.mu)
	busy := map[string]bool{} // the claims of the items in flight
	inFlight := 0
	var stateErr error
	for _, it := range items {
		for inFlight >= n && stateErr == nil {
			cond.Wait()
		}
		claims := w.claimsOf(it)
		for stateErr == nil && slices.ContainsFunc(claims, func(c string) bool { return busy[c] }) {
			cond.Wait()
		}
		if stateErr != nil {
			break
		}
		if n == 1 || !w.mayCall(it) {
			if stateErr = w.handle(ctx, it); stateErr != nil {
				break
			}
			continue
		}
		for _, c := range claims {
			busy[c] = true
		}
		inFlight++
		go func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if err := w.handle(ctx, it); err != nil && stateErr == nil {
				stateErr = err
			}
			for _, c := range claims {
				delete(busy, c)
			}
			inFlight--
			cond.Broadcast()
		}()
	}
	for inFlight > 0 {
		cond.Wait()
	}
	return stateErr
}

// handle processes one item, or defers it once the run has stopped, and
// commits the outcomes every commitEvery items.
func (w *writer) handle(ctx context.Context, it *item) error {
	if w.stopped == nil && ctx.Err() != nil {
		w.stop(ctx.Err())
	}
	if w.stopped != nil && it.action != actionNone && it.failed == "" {
		w.deferItem(it, w.knownUUID(it))
	} else {
		w.process(ctx, it)
	}
	if !it.retried {
		w.report.meter.processed.Add(1) // a conflict carried from an earlier chunk was counted there
	}
	if !it.queued {
		it.release()
	}
	return w.flush(false)
}

// mayCall tells whether processing the item may send a request to RapidPro;
// the others are settled at once, without a goroutine.
func (w *writer) mayCall(it *item) bool {
	return w.stopped == nil && it.Key != "" && !it.held && it.failed == "" &&
		(it.action == actionSync || it.action == actionRetire)
}

// claimsOf names what an item's writes depend on: its key, its phones, its
// linked contact and any contact the index shows holding one of its phones.
func (w *writer) claimsOf(it *item) []string {
	claims := make([]string, 0, 2+2*len(it.Contact.URNs))
	if it.Key != "" {
		claims = append(claims, "key:"+it.Key)
	}
	if it.rec.UUID != "" {
		claims = append(claims, "contact:"+it.rec.UUID)
	}
	if c := w.idx.byKey[it.Key]; c != nil && it.Key != "" {
		claims = append(claims, "contact:"+c.UUID)
	}
	for _, u := range it.Contact.URNs {
		claims = append(claims, "urn:"+u)
		if c := w.idx.byURN[u]; c != nil {
			claims = append(claims, "contact:"+c.UUID)
		}
	}
	return claims
}

// claim reserves a contact for the provider key for the rest of the run. It
// fails when another provider's write took it first: a contact found only
// by a look-up mid-run can hold two providers' phones.
func (w *writer) claim(uuid, key string) bool {
	if w.claimed == nil {
		w.claimed = map[string]string{}
	}
	if other, ok := w.claimed[uuid]; ok && other != key {
		return false
	}
	w.claimed[uuid] = key
	return true
}

// unlockedOps releases the writer's lock while a request is on the wire, so
// that the writer's other requests in flight go on meanwhile.
type unlockedOps struct {
	ops contactOps
	mu  *sync.Mutex
}

func (u unlockedOps) Contacts(ctx context.Context, q rapidpro.ContactQuery, fn func(rapidpro.Contact) error) error {
	u.mu.Unlock()
	defer u.mu.Lock()
	return u.ops.Contacts(ctx, q, func(c rapidpro.Contact) error {
		u.mu.Lock()
		defer u.mu.Unlock()
		return fn(c)
	})
}

func (u unlockedOps) CreateContact(ctx context.Context, cw rapidpro.ContactWrite) (rapidpro.Contact, error) {
	u.mu.Unlock()
	defer u.mu.Lock()
	return u.ops.CreateContact(ctx, cw)
}

func (u unlockedOps) UpdateContact(ctx context.Context, uuid string, cw rapidpro.ContactWrite) (rapidpro.Contact, error) {
	u.mu.Unlock()
	defer u.mu.Lock()
	return u.ops.UpdateContact(ctx, uuid, cw)
}

func (u unlockedOps) ContactAction(ctx context.Context, action string, contacts []string, group string) error {
	u.mu.Unlock()
	defer u.mu.Lock()
	return u.ops.ContactAction(ctx, action, contacts, group)
}
