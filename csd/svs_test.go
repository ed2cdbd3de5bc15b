package csd_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/openhie/mhero-mediator/csd"
)

func TestDecodeValueSet(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want map[string]string
	}{
		{
			name: "RetrieveValueSetResponse with two languages: the first display wins",
			doc: `<svs:RetrieveValueSetResponse xmlns:svs="urn:ihe:iti:svs:2008" version="1" id="1.2.3">
  <svs:ValueSet id="1.2.3" displayName="Cadres" version="1"><svs:ConceptList xml:lang="en">
    <svs:Concept code="CHW" displayName="Community Health Worker" codeSystem="urn:cadre"/>
    <svs:Concept code="RN" displayName="" codeSystem="urn:cadre"/>
  </svs:ConceptList></svs:ValueSet>
  <svs:ValueSet id="1.2.3" displayName="Cadres" version="1"><svs:ConceptList xml:lang="fr">
    <svs:Concept code="CHW" displayName="Agent de santé communautaire" codeSystem="urn:cadre"/>
    <svs:Concept code="RN" displayName="Infirmière" codeSystem="urn:cadre"/>
  </svs:ConceptList></svs:ValueSet>
</svs:RetrieveValueSetResponse>`,
			want: map[string]string{"CHW": "Community Health Worker", "RN": "Infirmière"},
		},
		{
			name: "DescribedValueSet in a RetrieveMultipleValueSetsResponse",
			doc: `<RetrieveMultipleValueSetsResponse xmlns="urn:ihe:iti:svs:2008"><DescribedValueSet ID="1"><ConceptList>
<Concept code="106-001" displayName="Active"/><Concept displayName="no code"/></ConceptList></DescribedValueSet></RetrieveMultipleValueSetsResponse>`,
			want: map[string]string{"106-001": "Active"},
		},
		{
			name: "bare ValueSet without namespace, concepts of other namespaces ignored",
			doc:  `<ValueSet xmlns:x="urn:x"><ConceptList><Concept code="BP" displayName="Business Phone"/><x:Concept code="no" displayName="no"/></ConceptList></ValueSet>`,
			want: map[string]string{"BP": "Business Phone"},
		},
		{
			name: "empty value set",
			doc:  `<ValueSet xmlns="urn:ihe:iti:svs:2008" id="1"/>`,
			want: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := csd.DecodeValueSet(strings.NewReader(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecodeValueSetErrors(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{`<CSD xmlns="urn:ihe:iti:csd:2013"/>`, "csd: line 1: expected element RetrieveValueSetResponse, RetrieveMultipleValueSetsResponse, ValueSet or DescribedValueSet, found CSD (namespace urn:ihe:iti:csd:2013)"},
		{`<x:ValueSet xmlns:x="urn:other"/>`, "found ValueSet (namespace urn:other)"},
		{"<ValueSet>\n<ConceptList>\n</ValueSet>", "csd: line 3:"},
		{``, "found end of input"},
		{`<ValueSet/><ValueSet/>`, "unexpected element ValueSet after the root element"},
	} {
		_, err := csd.DecodeValueSet(strings.NewReader(tt.doc))
		var se *csd.SyntaxError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DecodeValueSet(%q): error %v, want a SyntaxError with %q", tt.doc, err, tt.want)
		}
	}
}
