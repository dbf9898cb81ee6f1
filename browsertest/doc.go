// Package browsertest drives the admin listener's status page in a real
// headless Chromium, against a real sluice on loopback listeners in front
// of a store that throttles on demand: the page as an operator sees it,
// not its JSON. The test runs only where SLUICE_BROWSER names a Chromium
// binary (.ci/browser.sh installs Debian's and sets it), so that a plain
// go test ./... needs no browser.
package browsertest
