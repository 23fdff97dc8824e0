// CoreDNS for the local cluster of `just k8s-up`: CoreDNS's own server (coremain) with
// the plugins a cluster DNS uses, the way CoreDNS documents builds with a chosen plugin
// set. The full build also links the Route 53, Azure and Cloud DNS SDKs, which a node
// that never leaves the machine does not need and which would double the cold build.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
