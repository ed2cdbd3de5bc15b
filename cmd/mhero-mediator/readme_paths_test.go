package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's examples name files of the repository only, and every one
// exists: a clean clone runs them as written.
func TestReadmePathsInRepository(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(^|[\s(=])\.\./\S*`).Find(readme); m != nil {
		t.Errorf("README.md points outside the repository: %q", strings.TrimSpace(string(m)))
	}
	paths := regexp.MustCompile(`\b(?:testdata|docs)/[\w./-]*\w`).FindAll(readme, -1)
	if len(paths) == 0 {
		t.Fatal("README.md names no testdata or docs file")
	}
	for _, p := range paths {
		if _, err := os.Stat("../../" + string(p)); err != nil {
			t.Errorf("README.md names %s: %v", p, err)
		}
	}
}

// Every section of docs/protocols.md that a comment cites exists, so a
// reader of the code finds what it relies on in the repository.
func TestProtocolSectionsCited(t *testing.T) {
	doc, err := os.ReadFile("../../docs/protocols.md")
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{2,3} (.+)$`).FindAllSubmatch(doc, -1) {
		headings[string(m[1])] = true
	}
	cite := regexp.MustCompile(`docs/protocols\.md, ([^);:,]+?)(?:[);:,]|\.(?:\s|$))`)
	commentPrefix := regexp.MustCompile(`\n\s*//\s*`)
	cited := 0
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != "../.." {
			if err == nil {
				err = filepath.SkipDir
			}
			return err
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "readme_paths_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// Comments wrap: join their lines before matching.
		text := commentPrefix.ReplaceAllString(string(src), " ")
		for _, m := range cite.FindAllStringSubmatch(text, -1) {
			for _, name := range strings.Split(m[1], " and ") {
				cited++
				if !headings[name] {
					t.Errorf("%s cites docs/protocols.md, %q: no such section", path, name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited < 10 {
		t.Fatalf("%d citations of docs/protocols.md found, want the code's (at least 10)", cited)
	}
}
