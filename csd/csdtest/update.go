package csdtest

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/beevik/etree"
	"github.com/openhie/mhero-mediator/csd"
)

// createOtherID runs openinfoman-hwr's health_worker_create_otherid.xq
// (commit b66d091) on the served document: with exactly one provider whose
// @entityID matches id/@entityID ignoring case, and an otherID/@code given, it
// appends the otherID as the provider's last child, leaves record@updated
// alone, and answers with the provider and the new otherID's position;
// otherwise it changes nothing and answers an empty providerDirectory.
// Unlike OpenInfoMan's route, no rest:response element precedes the answer.
func (s *Server) createOtherID(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, fmt.Sprintf("csdtest: reading requestParams: %v", err), http.StatusBadRequest)
		return
	}
	tree, err := parseXML(raw)
	if err != nil {
		http.Error(w, fmt.Sprintf("csdtest: parsing requestParams: %v", err), http.StatusBadRequest)
		return
	}
	// OpenInfoMan's route takes requestParams in the CSD namespace or in
	// none, but the function reads only CSD-namespace children.
	root := tree.Root()
	if root == nil || root.Tag != "requestParams" || (root.NamespaceURI() != csd.Namespace && root.NamespaceURI() != "") {
		http.Error(w, "csdtest: the body must be a requestParams element", http.StatusBadRequest)
		return
	}
	var ids []string
	var others []*etree.Element
	for _, c := range root.ChildElements() {
		if c.NamespaceURI() != csd.Namespace {
			continue
		}
		switch c.Tag {
		case "id":
			if a := c.SelectAttr("entityID"); a != nil {
				ids = append(ids, a.Value)
			}
		case "otherID":
			others = append(others, c)
		}
	}
	s.mu.Lock()
	answer, err := s.doc.createOtherID(ids, others)
	s.mu.Unlock()
	if err != nil {
		http.Error(w, errXQuery+": "+err.Error(), http.StatusUnprocessableEntity)
		return
	}
	var entries [][]byte
	if answer != nil {
		entries = append(entries, answer)
	}
	writeCSD(w, ` xmlns:csd="`+csd.Namespace+`"`, "providerDirectory", entries)
}

// createOtherID changes the document, under Server.mu, and returns the
// provider element of the answer, nil when nothing was written. An error is
// one the XQuery raises: several id@entityID (upper-case of a sequence) or
// several otherIDs (string of a sequence).
func (d *document) createOtherID(ids []string, others []*etree.Element) ([]byte, error) {
	switch len(ids) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("%d id@entityID given, upper-case takes one", len(ids))
	}
	dir := d.dirs["providerDirectory"]
	match := -1
	for i, e := range dir.entries {
		// A provider without @entityID matches an empty id: upper-case(())
		// is "".
		if e.inCSD && sameID(e.entityID, ids[0]) {
			if match >= 0 {
				return nil, nil // count($provs0) = 1 fails
			}
			match = i
		}
	}
	hasCode := false
	for _, o := range others {
		hasCode = hasCode || o.SelectAttr("code") != nil
	}
	if match < 0 || !hasCode {
		return nil, nil
	}
	if len(others) > 1 {
		return nil, fmt.Errorf("%d otherIDs given, string takes one", len(others))
	}
	provider := dir.entries[match].elem
	position := 1
	for _, c := range provider.ChildElements() {
		if c.Tag == "otherID" && c.NamespaceURI() == csd.Namespace {
			position++
		}
	}
	// The new element is in the CSD namespace, under the provider's prefix
	// when that prefix means it.
	tag := "otherID"
	inPrefix := provider.NamespaceURI() == csd.Namespace
	if inPrefix && provider.Space != "" {
		tag = provider.Space + ":otherID"
	}
	id := etree.NewElement(tag)
	if !inPrefix {
		id.CreateAttr("xmlns", csd.Namespace)
	}
	id.CreateAttr("code", others[0].SelectAttrValue("code", ""))
	if a := others[0].SelectAttr("assigningAuthorityName"); a != nil {
		id.CreateAttr("assigningAuthorityName", a.Value)
	}
	id.SetText(stringValue(others[0]))
	// XQuery Update's "insert node … into" is "as last into" in BaseX.
	provider.AddChild(id)
	dir.entries[match] = store(provider, &d.tree.WriteSettings, true)
	d.raw = nil

	var b bytes.Buffer
	b.WriteString(`<provider entityID="`)
	_ = xml.EscapeText(&b, []byte(dir.entries[match].entityID)) // a bytes.Buffer does not fail
	fmt.Fprintf(&b, "\">\n      <otherID position=\"%d\"/>\n    </provider>", position)
	return b.Bytes(), nil
}

// stringValue is XPath's string(): the element's descendant text, joined,
// untrimmed.
func stringValue(e *etree.Element) string {
	var b strings.Builder
	var walk func(*etree.Element)
	walk = func(e *etree.Element) {
		for _, t := range e.Child {
			switch t := t.(type) {
			case *etree.CharData:
				b.WriteString(t.Data)
			case *etree.Element:
				walk(t)
			}
		}
	}
	walk(e)
	return b.String()
}
