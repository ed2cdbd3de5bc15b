package csd

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzNextReadsAsToken checks that reader.next, which calls
// xml.Decoder.RawToken and matches end tags and resolves namespaces itself,
// reads every input as xml.Decoder.Token does: the same tokens, names,
// attributes and text, and the same error (its line included).
func FuzzNextReadsAsToken(f *testing.F) {
	filepath.WalkDir("../testdata/csd-corpus", func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".xml") {
			if b, err := os.ReadFile(path); err == nil && len(b) < 32<<10 {
				f.Add(b)
			}
		}
		return nil
	})
	for _, doc := range []string{
		`<CSD xmlns="urn:ihe:iti:csd:2013"><providerDirectory><provider entityID='a'/></providerDirectory></CSD>`,
		`<a:CSD xmlns:a="urn:ihe:iti:csd:2013" xmlns="x"><b xmlns:a="y" a:c="1" c="2" xml:lang="en"><a:d/></b><a:e a:f=""/></a:CSD>`,
		`<a xmlns:p="u"><p:b></b></a>`,
		`<a><b></a>`,
		`<a></a></b>`,
		`<p:a xmlns:p="u"></q:a>`,
		`<a xmlns="" xmlns:xmlns="z"><xmlns:b/><c:d/></a>`,
		`<a>x &amp; &#233; <![CDATA[<y>]]><!-- c --><?pi x?></a>`,
		"\ufeff<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>",
		`<?xml version="1.0" encoding="ascii"?><!DOCTYPE a><a/>`,
		`<a><b>`,
	} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		d := xml.NewDecoder(bytes.NewReader(doc))
		d.CharsetReader = charsetReader
		r := newReader(bytes.NewReader(doc), Limits{MaxDepth: 1 << 30, MaxElementBytes: 1 << 40})
		for i := 0; ; i++ {
			want, wantErr := d.Token()
			got, gotErr := r.next()
			if wantErr != nil || gotErr != nil {
				if wantErr == io.EOF || gotErr == io.EOF {
					if wantErr != gotErr {
						t.Fatalf("token %d: error %v, Token's %v", i, gotErr, wantErr)
					}
					return
				}
				if gotErr == nil || wantErr == nil || errors.Unwrap(gotErr) == nil || errors.Unwrap(gotErr).Error() != wantErr.Error() {
					t.Fatalf("token %d: error %v, Token's %v", i, gotErr, wantErr)
				}
				return
			}
			var same bool
			switch want := want.(type) {
			case xml.StartElement:
				same = got.kind == tokStart && reflect.DeepEqual(got.se, want)
			case xml.EndElement:
				same = got.kind == tokEnd
			case xml.CharData:
				same = got.kind == tokText && bytes.Equal(got.text, want)
			default:
				same = got.kind == tokOther
			}
			if !same {
				t.Fatalf("token %d: %+v, Token's %#v", i, got, want)
			}
		}
	})
}
