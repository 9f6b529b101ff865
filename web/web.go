// Package web holds the web chat app as the node serves it: the bundle in
// dist/, built from app/ (the page) and client/ (the TypeScript client
// library) by `make web` and committed, so that building the node needs no
// JavaScript tool. TestBundleFresh fails when dist/ is not what the sources
// build to.
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// Dist is the built app: index.html at its root, the hashed assets under
// assets/.
func Dist() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is embedded above: cannot happen
	}
	return sub
}
