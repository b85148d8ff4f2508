# Conduit operator: what `conduit keys generate --config`, `keys
# vault-import`, `keys vault-versions` and `keys rotate` need beyond the
# gateway's policy: writing a new KV v2 version (check-and-set), and
# creating the Transit signing key once. Give it to an operator's token
# (CONDUIT_VAULT_TOKEN), never to the gateway's role.

path "conduit/data/agency-identity" {
  capabilities = ["create", "update", "read"]
}

path "conduit/metadata/agency-identity" {
  capabilities = ["read"]
}

path "conduit-transit/keys/agency-signing" {
  capabilities = ["create", "update", "read"]
}

path "conduit-transit/sign/agency-signing/*" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
