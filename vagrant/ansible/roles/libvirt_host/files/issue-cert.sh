#!/bin/sh
# issue-cert.sh CA_DIR STEM ROLE CN SANS: a key STEMkey.pem (0600) and a certificate
# STEMcert.pem signed by CA_DIR's CA, for ROLE server or client, with subjectAltName SANS
# (e.g. "IP:10.0.0.1,DNS:kvm1"; empty for none). Run on the controller by provision.yml.
set -eu
ca=$1 stem=$2 role=$3 cn=$4 sans=$5
case $role in
    server) eku=serverAuth ;;
    client) eku=clientAuth ;;
    *) echo "issue-cert.sh: role must be server or client, not '$role'" >&2; exit 2 ;;
esac
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem"
openssl req -new -key "$work/key.pem" -subj "/O=livemig/CN=$cn" -out "$work/req.csr"
{
    echo "[leaf]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    [ -z "$sans" ] || echo "subjectAltName = $sans"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid"
} >"$work/ext.cnf"
openssl x509 -req -in "$work/req.csr" -CA "$ca/cacert.pem" -CAkey "$ca/cakey.pem" \
    -set_serial "0x$(openssl rand -hex 15)" -sha256 -days 3650 \
    -extfile "$work/ext.cnf" -extensions leaf -out "$work/cert.pem"
chmod 644 "$work/cert.pem"
mv "$work/key.pem" "${stem}key.pem"
mv "$work/cert.pem" "${stem}cert.pem"
