// Package examples embeds the example agency directory and policy, so that
// `conduit demo` and the end-to-end tests run with no files around them.
package examples

import "embed"

// Directory is examples/directory.yaml.
//
//go:embed directory.yaml
var Directory []byte

// Policy is examples/policy.yaml.
//
//go:embed policy.yaml
var Policy []byte

// Packages holds examples/packages: one package manifest per rule, and
// the body they name.
//
//go:embed packages
var Packages embed.FS
