// Command sandbox-router is the compiled data path of the sandbox router: the same contract as
// the Python router in images/router (routing headers, authentication, the address policy, the
// watch resolver, limits, answers and metrics, configured by the same environment variables),
// with one goroutine per client connection and blocking I/O instead of an event loop. It exists
// because the Python router's per-request cost is dominated by its event loop, not by its own
// code (py-spy: 54% of its CPU in uvloop), so only a compiled process can cut it further.
//
// Standard library only: the image is the static binary on an empty base, and the build needs
// no module download.
package main
