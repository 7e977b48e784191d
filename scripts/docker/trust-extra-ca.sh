#!/bin/sh
# Used by the Dockerfile: when OTTER_EXTRA_CA_CERT holds a PEM certificate, the system trusts it
# (update-ca-certificates; curl, apt over https, cargo, pip and Python's ssl read that bundle).
# Empty or unset: nothing changes.
set -eu
[ -n "${OTTER_EXTRA_CA_CERT:-}" ] || exit 0
case "$OTTER_EXTRA_CA_CERT" in
*"-----BEGIN CERTIFICATE-----"*) ;;
*)
  echo "OTTER_EXTRA_CA_CERT is set but holds no PEM certificate (-----BEGIN CERTIFICATE-----)" >&2
  exit 1
  ;;
esac
command -v update-ca-certificates >/dev/null 2>&1 || {
  echo "OTTER_EXTRA_CA_CERT is set but this image has no update-ca-certificates (ca-certificates)" >&2
  exit 1
}
mkdir -p /usr/local/share/ca-certificates
printf '%s\n' "$OTTER_EXTRA_CA_CERT" >/usr/local/share/ca-certificates/otter-extra-ca.crt
update-ca-certificates >/dev/null
echo "trusting the extra CA certificate of OTTER_EXTRA_CA_CERT"
