package csd

import (
	"encoding/xml"
	"io"
)

// SVSNamespace is the IHE Sharing Value Sets namespace.
const SVSNamespace = "urn:ihe:iti:svs:2008"

// valueSetRoots names the root elements DecodeValueSet accepts.
const valueSetRoots = "RetrieveValueSetResponse, RetrieveMultipleValueSetsResponse, ValueSet or DescribedValueSet"

// DecodeValueSet reads an IHE SVS value set and returns each Concept's code
// mapped to its displayName. The root may be the RetrieveValueSetResponse
// OpenInfoMan's /CSD/SVS/RetrieveValueSet answers (one ValueSet per concept
// list language), a RetrieveMultipleValueSetsResponse, or a bare ValueSet or
// DescribedValueSet as OpenInfoMan stores them. A code listed again (in
// another language) keeps its first non-empty displayName; a Concept without
// a code is ignored. The document is read under DefaultLimits.
func DecodeValueSet(r io.Reader) (map[string]string, error) {
	rd := newReader(r, DefaultLimits)
	root, err := rd.root(valueSetRoots)
	if err != nil {
		return nil, err
	}
	switch {
	case isSVS(root.Name, "RetrieveValueSetResponse"), isSVS(root.Name, "RetrieveMultipleValueSetsResponse"),
		isSVS(root.Name, "ValueSet"), isSVS(root.Name, "DescribedValueSet"):
	default:
		return nil, rd.unexpected(root, valueSetRoots)
	}
	concepts := map[string]string{}
	// Concepts sit in ConceptLists at a depth that differs between the
	// roots, so every element is searched.
	var walk func(xml.StartElement) error
	walk = func(c xml.StartElement) error {
		if !isSVS(c.Name, "Concept") {
			return rd.children(walk)
		}
		if code := attr(c, "code"); code != "" && concepts[code] == "" {
			concepts[code] = attr(c, "displayName")
		}
		return rd.skip()
	}
	if err := rd.children(walk); err != nil {
		return nil, err
	}
	if err := rd.end(); err != nil {
		return nil, err
	}
	return concepts, nil
}

// isSVS matches on the namespace URI, accepting none as inCSD does.
func isSVS(n xml.Name, local string) bool {
	return n.Local == local && (n.Space == SVSNamespace || n.Space == "")
}
