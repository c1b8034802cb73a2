//go:build node

package node

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// services checks the seed's premise for Services: kube-proxy (iptables, no masquerade between
// pods) rewrites only the destination of a ClusterIP's connection, so the server pod's policy
// judges the client pod by its labels exactly as when it connects to the pod's address.
// Traffic from outside the cluster through a NodePort is masqueraded to the node's address on
// its way to the pod: podwall sees a forwarded packet with the node's address, which is the
// world's (SPEC 8: only the node's own stack is "the node"), with no labels; so only rules
// that need no source label let it in. With externalTrafficPolicy: Local kube-proxy keeps the
// client's address, and a `from cidr` rule can name the clients.
func (c *cluster) services(t *testing.T) {
	dbSvc := c.service(t, "shop", "db", corev1.ServiceTypeClusterIP, "", 80)
	dbNP := c.service(t, "shop", "db-np", corev1.ServiceTypeNodePort, corev1.ServiceExternalTrafficPolicyCluster, 80, "db")
	storeNP := c.service(t, "shop", "store-np", corev1.ServiceTypeNodePort, corev1.ServiceExternalTrafficPolicyCluster, 443, "store")
	c.mu.Lock()
	c.ips["svc/db"] = dbSvc.ip
	c.mu.Unlock()
	viaNode := func(name string, np svc, pass bool) check {
		return check{name: name, from: outside, to: netip.AddrPortFrom(NodeIP, np.nodePort), pass: pass}
	}
	c.eventually(t,
		c.tcp("a backend through the ClusterIP: as to the pod", "shop/api", "svc/db", 80, true),
		c.tcp("a frontend through the ClusterIP: dropped, as to the pod", "shop/web", "svc/db", 80, false),
		c.tcp("another namespace's backend through the ClusterIP: dropped", "other/intruder", "svc/db", 80, false),
		viaNode("the world through a NodePort, masqueraded: no labels", dbNP, false),
		viaNode("the world through a NodePort, to a rule without a source: passes", storeNP, true),
	)

	// Local keeps the client's address: a rule for the outside network lets it in.
	c.n.Kubectl(t, "-n", "shop", "annotate", "pod", "ports", policyKey+"=allow tcp from cidr "+OutsideIP.String()+"/32 to ports 80", "--overwrite")
	portsLocal := c.service(t, "shop", "ports-local", corev1.ServiceTypeNodePort, corev1.ServiceExternalTrafficPolicyLocal, 80, "ports")
	portsNP := c.service(t, "shop", "ports-np", corev1.ServiceTypeNodePort, corev1.ServiceExternalTrafficPolicyCluster, 80, "ports")
	c.eventually(t,
		viaNode("externalTrafficPolicy Local keeps the client's address: from cidr matches", portsLocal, true),
		viaNode("Cluster masquerades it: from cidr cannot match", portsNP, false),
		c.tcp("and pods are not that cidr", "shop/web", "shop/ports", 80, false),
	)
	// Back to the policy the other scenarios expect.
	c.n.Kubectl(t, "-n", "shop", "annotate", "pod", "ports", policyKey+"=allow tcp to ports 80,443; deny tcp to ports 443", "--overwrite")
	c.eventually(t, c.tcp("ports' policy restored", "shop/web", "shop/ports", 80, true))
}

type svc struct {
	ip       netip.Addr
	nodePort uint16
}

// service makes a Service of the pods whose role is the service's name (or the given role).
func (c *cluster) service(t *testing.T, ns, name string, typ corev1.ServiceType, etp corev1.ServiceExternalTrafficPolicy, port int32, role ...string) svc {
	sel := name
	if len(role) > 0 {
		sel = role[0]
	}
	obj := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:                  typ,
			ExternalTrafficPolicy: etp,
			Selector:              map[string]string{"role": sel},
			Ports:                 []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}
	got, err := c.n.Client.CoreV1().Services(ns).Create(context.Background(), obj, metav1.CreateOptions{})
	require.NoError(t, err, "create service %s/%s", ns, name)
	return svc{ip: netip.MustParseAddr(got.Spec.ClusterIP), nodePort: uint16(got.Spec.Ports[0].NodePort)} //nolint:gosec // G115: a port
}
