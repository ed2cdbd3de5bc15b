package csd

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ErrNoSuchProvider is wrapped by the error of an AddOtherID that OpenInfoMan
// answered without a provider: none, or more than one (ids differing only in
// case), has that entityID, so nothing was written.
var ErrNoSuchProvider = errors.New("no single provider with this entityID; nothing was written")

// AddOtherID appends id to the provider entityID of the Client's document
// through the updating stored function CreateOtherID, which exists only where
// openhie/openinfoman-hwr is installed (elsewhere no route matches; a 404 is
// reported as such, untried against a live server).
//
// What that function does, as read in openhie/openinfoman-hwr at commit
// b66d0916322b0e1da157abdf53e9aaaa53ceeaff, file
// resources/stored_updating_query_definitions/health_worker_create_otherid.xq
// (last changed in f62cdfd, 2014-10-17, "changed @urn to @entityID"; the
// repo/csd_health_worker_registry_updating.xqm version, removed in 2014,
// selected by id/@oid instead):
//   - it selects by id/@entityID, compared ignoring case, and writes only when
//     exactly one provider matches and otherID/@code is present;
//   - it inserts <otherID code assigningAuthorityName>value</otherID> as the
//     provider's last child (after record), never replacing one: each call
//     adds another;
//   - it leaves record/@updated as it was, so the write does not show in an
//     updated-since search;
//   - it answers 200 with a CSD document whose providerDirectory holds
//     <provider entityID="…"><otherID position="n"/></provider> when it wrote,
//     and nothing otherwise (ErrNoSuchProvider here).
//
// The route OpenInfoMan generates for it (openhie/openinfoman
// resources/scripts/install_stored_function.php, at b3cf8ef) answers an
// unknown document with an empty 200 (ErrUnknownDocument), and emits a
// rest:response of its own before the function's, which may reach the body:
// whatever precedes the CSD element is therefore ignored.
//
// The call is never retried, whatever RetryMax says: the function appends,
// so repeating a call whose answer was lost would write twice. A failed call
// is for the caller's next run, which should first look for the otherID
// among the provider's.
func (c *Client) AddOtherID(ctx context.Context, entityID string, id OtherID) error {
	if c.BaseURL == "" || c.Document == "" {
		return errors.New("csd: Client needs a BaseURL and a Document")
	}
	if strings.TrimSpace(entityID) == "" || strings.TrimSpace(id.Code) == "" {
		return errors.New("csd: AddOtherID needs an entityID and an otherID code")
	}
	fail := func(err error) error {
		return fmt.Errorf("csd: adding otherID %s to provider %q: %w", id.Code, entityID, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint("update/"+CreateOtherID), bytes.NewReader(otherIDParams(entityID, id)))
	if err != nil {
		return fail(err)
	}
	c.prepare(req)
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fail(err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent:
	case http.StatusNotFound:
		return fail(fmt.Errorf("%w (is openinfoman-hwr, which defines %s, installed?)", statusError(resp), CreateOtherID))
	default:
		return fail(statusError(resp))
	}
	written, err := readUpdateAnswer(resp.Body)
	switch {
	case errors.Is(err, io.EOF):
		return fail(fmt.Errorf("document %q is %w", c.Document, ErrUnknownDocument))
	case err != nil:
		return fail(err)
	case !written:
		return fail(ErrNoSuchProvider)
	}
	return nil
}

// otherIDParams builds the function's parameters; xml.EscapeText escapes
// quotes too, so it serves attribute values as well.
func otherIDParams(entityID string, id OtherID) []byte {
	var b bytes.Buffer
	b.WriteString(`<csd:requestParams xmlns:csd="urn:ihe:iti:csd:2013"><csd:id entityID="`)
	_ = xml.EscapeText(&b, []byte(entityID)) // a bytes.Buffer does not fail
	b.WriteString(`"/><csd:otherID assigningAuthorityName="`)
	_ = xml.EscapeText(&b, []byte(id.AssigningAuthorityName))
	b.WriteString(`" code="`)
	_ = xml.EscapeText(&b, []byte(id.Code))
	b.WriteString(`">`)
	_ = xml.EscapeText(&b, []byte(id.Value))
	b.WriteString(`</csd:otherID></csd:requestParams>`)
	return b.Bytes()
}

// maxUpdateAnswer bounds what is read of an update's answer: one provider
// with one empty otherID, in a CSD wrapper.
const maxUpdateAnswer = 64 << 10

// readUpdateAnswer reports whether the answer holds a CSD document with a
// provider in its providerDirectory. Elements outside the CSD element, such
// as a leading rest:response, are skipped; io.EOF means an empty answer.
func readUpdateAnswer(r io.Reader) (written bool, err error) {
	d := xml.NewDecoder(io.LimitReader(r, maxUpdateAnswer))
	d.CharsetReader = charsetReader
	// The path of CSD-namespace elements from the CSD element down.
	var path []string
	sawCSD, empty := false, true
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, fmt.Errorf("reading the answer: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			empty = false
			switch {
			case len(path) == 0 && isCSD(t.Name, "CSD"):
				sawCSD = true
				path = append(path, "CSD")
			case len(path) > 0:
				path = append(path, t.Name.Local)
				if len(path) == 3 && path[1] == "providerDirectory" && isCSD(t.Name, "provider") {
					written = true
				}
			}
		case xml.EndElement:
			if len(path) > 0 {
				path = path[:len(path)-1]
			}
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 {
				empty = false
			}
		}
	}
	switch {
	case empty:
		return false, io.EOF
	case !sawCSD:
		return false, errors.New("the answer holds no CSD document")
	}
	return written, nil
}
