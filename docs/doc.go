// Package docs holds scoregate's documentation beyond the README, as Markdown files, one per
// subject; it has no code. Its tests keep the documents true to the code and to each other:
// threat-model.md defines every threat id that code, tests and documents cite, and names only
// tests that exist; every relative link of the README and of these documents resolves, to a
// file of the repository and to a heading that exists. (configuration.md is generated and
// checked by internal/configdoc; the commands of the README and of these documents are run by
// cmd/gateway's TestDocCommands and TestOperationsGuide.)
package docs
