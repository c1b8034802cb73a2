package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/podwall/podwall/tests/kapi"
)

// identity is a user of the cluster, authenticated by a bearer token from the token file.
type identity struct {
	user   string
	groups []string
	token  string
}

// pki is the node's key material: one CA that signs the API server's serving certificate and
// the client certificate it shows the kubelet; the kubelet trusts that CA for clients, and
// every component authenticates to the API server with a token of its own identity, so the
// Node authorizer and RBAC judge each as they would in a cluster.
type pki struct {
	dir                   string
	caData                []byte
	caCert                string
	servingCert           string
	servingKey            string
	kubeletClientCert     string
	kubeletClientKey      string
	saKey                 string
	tokenFile             string
	admin, kubelet, proxy identity
	controllerManager     identity
	scheduler             identity
}

// writePKI makes the keys with ECDSA P-256, which costs microseconds. servingIPs are the API
// server's addresses: the node's, the kubernetes Service's and loopback.
func writePKI(dir, nodeName string, servingIPs []net.IP) (*pki, error) {
	p := &pki{
		dir:               dir,
		caCert:            filepath.Join(dir, "ca.crt"),
		servingCert:       filepath.Join(dir, "apiserver.crt"),
		servingKey:        filepath.Join(dir, "apiserver.key"),
		kubeletClientCert: filepath.Join(dir, "apiserver-kubelet-client.crt"),
		kubeletClientKey:  filepath.Join(dir, "apiserver-kubelet-client.key"),
		saKey:             filepath.Join(dir, "service-account.key"),
		tokenFile:         filepath.Join(dir, "tokens.csv"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "podwall-test-node-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	p.caData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(p.caCert, p.caData, 0o644); err != nil { //nolint:gosec // G306: a certificate
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}

	issue := func(serial int64, subject pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generate key for %s: %w", subject.CommonName, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      subject,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(7 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("create certificate for %s: %w", subject.CommonName, err)
		}
		//nolint:gosec // G306: a certificate
		if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return fmt.Errorf("write certificate: %w", err)
		}
		return kapi.WriteECKey(keyPath, key)
	}
	if err := issue(2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth, servingIPs,
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		p.servingCert, p.servingKey); err != nil {
		return nil, err
	}
	// The API server calls the kubelet (logs, exec) with this certificate; system:masters
	// passes the kubelet's authorization webhook.
	if err := issue(3, pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil, p.kubeletClientCert, p.kubeletClientKey); err != nil {
		return nil, err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	if err := kapi.WriteECKey(p.saKey, saKey); err != nil {
		return nil, err
	}

	ids := []*identity{
		{user: "podwall-test-admin", groups: []string{"system:masters"}},
		{user: "system:node:" + nodeName, groups: []string{"system:nodes"}},
		{user: "system:kube-proxy"},
		{user: "system:kube-controller-manager"},
		{user: "system:kube-scheduler"},
	}
	var lines strings.Builder
	for _, id := range ids {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("generate token: %w", err)
		}
		id.token = hex.EncodeToString(b)
		// token,user,uid,"group1,group2"
		fmt.Fprintf(&lines, "%s,%s,%s,%q\n", id.token, id.user, id.user, strings.Join(id.groups, ","))
	}
	p.admin, p.kubelet, p.proxy, p.controllerManager, p.scheduler = *ids[0], *ids[1], *ids[2], *ids[3], *ids[4]
	if err := os.WriteFile(p.tokenFile, []byte(lines.String()), 0o600); err != nil {
		return nil, fmt.Errorf("write token file: %w", err)
	}
	return p, nil
}
