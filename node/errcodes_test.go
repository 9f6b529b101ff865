package node

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"

	"parley/engine"
	"parley/wire"
)

// Every engine.ErrCode constant, found in the engine's source so that a new
// one cannot be left out, maps to the protocol code of the same name.
func TestWireCodeCoversEveryEngineCode(t *testing.T) {
	codes := engineErrCodes(t)
	if len(codes) < 8 {
		t.Fatalf("found only %d engine codes: %v", len(codes), codes)
	}
	for _, c := range codes {
		if c == engine.ErrCodeNone {
			continue
		}
		if got := wireCode(c); got != wire.Code(c) {
			t.Errorf("engine code %q maps to %q", c, got)
		}
	}
	if got := wireCode("no such code"); got != wire.CodeInternal {
		t.Errorf("an unknown engine code maps to %q, want internal", got)
	}
}

// engineErrCodes parses the engine package and returns the values of its
// constants of type ErrCode.
func engineErrCodes(t *testing.T) []engine.ErrCode {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "engine", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var codes []engine.ErrCode
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "ErrCode" {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: an ErrCode that is not a string literal", fset.Position(v.Pos()))
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					codes = append(codes, engine.ErrCode(s))
				}
			}
		}
	}
	return codes
}
