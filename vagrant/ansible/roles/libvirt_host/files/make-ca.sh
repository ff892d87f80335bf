#!/bin/sh
# make-ca.sh DIR: a self-signed CA for livemig's hosts (ECDSA P-256, 10 years) in DIR:
# cakey.pem (0600) and cacert.pem. Run on the controller by provision.yml.
set -eu
dir=$1
umask 077
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/cakey.pem"
cnf=$(mktemp)
trap 'rm -f "$cnf"' EXIT
cat >"$cnf" <<CNF
[req]
prompt = no
distinguished_name = dn
x509_extensions = ca
[dn]
O = livemig
CN = livemig KVM hosts CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
openssl req -x509 -new -config "$cnf" -key "$dir/cakey.pem" -sha256 -days 3650 \
    -out "$dir/cacert.pem.tmp"
chmod 644 "$dir/cacert.pem.tmp"
mv "$dir/cacert.pem.tmp" "$dir/cacert.pem"
