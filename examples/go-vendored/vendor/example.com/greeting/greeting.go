// Package greeting stands for a third-party module: vendored, so the build needs no proxy.
package greeting

// For says hello to name.
func For(name string) string { return "Hello from " + name }
