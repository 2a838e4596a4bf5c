"""uncloud host-side program: runs on a hypervisor, one verb per request.

Python 3.11 standard library only. The control plane ships this package as one zipapp
(agents/hostside/build.py, checksum-verified) and runs it over SSH:

    python3 -I -S uncloud_hostside-<sha>.pyz VERB  < spec.json  > answer.json
    python3 -I -S uncloud_hostside-<sha>.pyz serve                 # many, one JSON line each

The wire format is described in ../README.md. Every verb is idempotent. Every host command is an
argument list; no shell is ever involved. Where to find what:

    __main__   dispatch of one verb or `serve`          dispatch  the verb table, batch
    errors     HostsideError, exit statuses              checks    spec validation
    system     running commands, binaries, links, KVM    paths     the whole state-dir layout
    state      files, locks, owned processes             program   the running artifact
    addressing names and addresses from VNIs and MACs    nft       the nftables rule set
    net        net-up / net-down (VXLAN, bridge, radvd)  qmp       qemu's control protocol
    vmspec     a VM spec checked, qemu's command line    vm        vm-up / vm-down / vm-status
    guests     running qemu and what it holds open       hotplug   NICs, firewall, disks live
    nat64      nat64-sync (tayga)                        inventory what runs, for the reconciler
    storage    images, disks, snapshots in files         rbd       the same in Ceph
    rbd_import a base image into Ceph once, under a lock netlink   links, addresses, nft tables read, no process
    metadata   config drives, metadata-up/-down          metadata_server  the HTTP daemon
    hostinfo   host-info                                 kvm       whether KVM really runs guests
    hostdown   host-down (everything of a state dir down)
    migration  live migration: vm-incoming, migrate-send, the SSH relay and tunnel between hosts
    ha         heartbeat, the fence guard, peer-probe, start generations, ceph-blocklist
"""
