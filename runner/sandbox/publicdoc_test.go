package sandbox

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPublicNamesDocumented: every exported name of the public packages
// (docs/library.md, Packages) carries a doc comment, so an alias of an
// internal type is never exposed without saying what it is.
func TestPublicNamesDocumented(t *testing.T) {
	for _, dir := range []string{".", "../gitgate", "../daemons", "../shield", "../doctor"} {
		fset := token.NewFileSet()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if d.Name.IsExported() && (d.Recv == nil || recvExported(d.Recv)) {
						n++
						if d.Doc == nil {
							t.Errorf("%s: func %s has no doc comment", fset.Position(d.Pos()), d.Name.Name)
						}
					}
				case *ast.GenDecl:
					for _, s := range d.Specs {
						var ids []*ast.Ident
						var doc *ast.CommentGroup
						switch s := s.(type) {
						case *ast.TypeSpec:
							ids, doc = []*ast.Ident{s.Name}, s.Doc
						case *ast.ValueSpec:
							ids, doc = s.Names, s.Doc
						default:
							continue
						}
						for _, id := range ids {
							if !id.IsExported() {
								continue
							}
							n++
							if doc == nil && d.Doc == nil {
								t.Errorf("%s: %s has no doc comment", fset.Position(id.Pos()), id.Name)
							}
						}
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no exported names found (wrong directory?)", dir)
		}
	}
}

func recvExported(r *ast.FieldList) bool {
	if len(r.List) == 0 {
		return false
	}
	x := r.List[0].Type
	if s, ok := x.(*ast.StarExpr); ok {
		x = s.X
	}
	id, ok := x.(*ast.Ident)
	return ok && id.IsExported()
}
