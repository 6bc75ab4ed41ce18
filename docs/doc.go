// Package docs holds scoregate's documentation beyond the README, as Markdown files; it has no
// code. Its tests keep the documents true to the code: threat-model.md defines every threat id
// that code, tests and documents cite, and names only tests that exist. (configuration.md is
// generated and checked by internal/configdoc.)
package docs
