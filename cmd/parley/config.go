package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// A configuration file is the flags written down: each key of the TOML
// file is a flag's name, and a table prefixes its keys with its name and a
// dash, so
//
//	http = "0.0.0.0:7070"
//	[push]
//	fcm-key = "/etc/parley/fcm.json"
//
// is -http 0.0.0.0:7070 -push-fcm-key /etc/parley/fcm.json. Every value
// goes through its flag's own parsing, so the file is checked exactly as
// the command line is, and a flag given on the command line wins over the
// file. -print-config writes the settings in effect in this form.

// applyConfigFile sets, from the TOML file at path, the flags of fs that
// the command line did not set.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	settings := map[string]any{}
	if err := flatten(doc, "", settings); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, name := range slices.Sorted(mapKeys(settings)) {
		f := fs.Lookup(name)
		switch {
		case f == nil || name == "config" || name == "print-config":
			return fmt.Errorf("%s: %q is not a setting (parley -help lists them)", path, name)
		case onCommandLine[name]:
			continue
		}
		v, err := flagText(settings[name])
		if err != nil {
			return fmt.Errorf("%s: %s: %v", path, name, err)
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("%s: %s: invalid value %q: %v", path, name, v, err)
		}
	}
	return nil
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// flatten turns tables into dash-joined flag names.
func flatten(doc map[string]any, prefix string, out map[string]any) error {
	for k, v := range doc {
		name := prefix + k
		if t, ok := v.(map[string]any); ok {
			if err := flatten(t, name+"-", out); err != nil {
				return err
			}
			continue
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("%q is set twice", name)
		}
		out[name] = v
	}
	return nil
}

// flagText is a TOML value as the command line would give it.
func flagText(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	}
	return "", fmt.Errorf("a %T; want a string, number or boolean", v)
}

// printConfig writes every setting of fs, as in effect, as a file
// applyConfigFile reads back, each with its help as a comment.
func printConfig(w io.Writer, fs *flag.FlagSet) error {
	var b strings.Builder
	b.WriteString("# parley configuration: the flags in effect (parley -config FILE reads this back)\n")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == "print-config" {
			return
		}
		fmt.Fprintf(&b, "\n# %s\n%s = %s\n", strings.ReplaceAll(f.Usage, "\n", "\n# "), f.Name, tomlValue(f))
	})
	_, err := io.WriteString(w, b.String())
	return err
}

// tomlValue writes a flag's value as a TOML value: booleans and numbers
// bare, everything else (durations included) as a string.
func tomlValue(f *flag.Flag) string {
	s := f.Value.String()
	switch fmt.Sprintf("%T", f.Value) {
	case "*flag.boolValue", "*flag.intValue", "*flag.int64Value", "*flag.uintValue", "*flag.uint64Value", "*flag.float64Value":
		return s
	}
	return strconv.Quote(s)
}
