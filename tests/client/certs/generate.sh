#!/bin/sh
# Regenerate the test PKI used by test_tls.py: a CA, a server certificate for
# "sluice.test" and a client certificate, all valid for 100 years.
set -eu
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
  -subj "/CN=Sluice test CA" -keyout ca.key -out ca.pem
for name in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$name.sluice.test" -keyout $name.key -out $name.csr
done
printf 'subjectAltName=DNS:sluice.test\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for name in server client; do
  openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
    -extfile $name.ext -out $name.pem
done
rm -f ./*.csr ./*.ext ca.key ca.srl
