# Conduit gateway: the least privilege the running gateway needs.
# It reads its agency key (every KV v2 version, for packages sealed to an
# earlier encryption subkey), reads the metadata (the current version: how
# it notices a rotation), signs with its Transit key, and keeps its own
# token alive. It writes nothing: rotation and import are an operator's
# (vault-policy-operator.hcl).
#
# Paths assume vault.mount "conduit", vault.path "agency-identity",
# vault.transit {mount: conduit-transit, key: agency-signing}: change them
# here if you change them in the config.

path "conduit/data/agency-identity" {
  capabilities = ["read"]
}

path "conduit/metadata/agency-identity" {
  capabilities = ["read"]
}

# Transit signing (only with vault.transit): the public key, and signing
# with it. The private key never leaves Vault.
path "conduit-transit/keys/agency-signing" {
  capabilities = ["read"]
}

path "conduit-transit/sign/agency-signing/*" {
  capabilities = ["update"]
}

# The token's own lifetime (tokens made with no_default_policy lack these).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
