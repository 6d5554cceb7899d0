"""The only package that talks to the kernel: namespaces, mounts, cgroups, links, the spawner.

Everything outside ``dynod.linux`` reads as the platform's story (apps, releases, dynos); every
syscall, ioctl and /sys or /proc write lives here.
"""
