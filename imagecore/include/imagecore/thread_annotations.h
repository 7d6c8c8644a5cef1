// Clang's thread-safety attributes, so that the compiler checks which lock
// guards what (packaging/test.sh runs clang with -Werror=thread-safety).
// Other compilers see nothing.
//
// Lock order across the layers, outermost first: a mount's image entry
// (fuse/namespace.h: ImageEntry::mu), then the chain (Chain::write_mu_,
// then Chain::io_mu_), then a driver's own locks (qcow2: meta_mu_, then
// damage_mu_; vmdk: cid_mu_, then each extent's mu_). A lock documented as
// "taken alone or innermost" is never held while another is taken.
#pragma once

#if defined(__clang__)
#define IMGFS_TSA(x) __attribute__((x))
#else
#define IMGFS_TSA(x)
#endif

#define CAPABILITY(x) IMGFS_TSA(capability(x))
#define SCOPED_CAPABILITY IMGFS_TSA(scoped_lockable)
#define GUARDED_BY(x) IMGFS_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) IMGFS_TSA(pt_guarded_by(x))
#define REQUIRES(...) IMGFS_TSA(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) IMGFS_TSA(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) IMGFS_TSA(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) IMGFS_TSA(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) IMGFS_TSA(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) IMGFS_TSA(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) IMGFS_TSA(release_generic_capability(__VA_ARGS__))
#define EXCLUDES(...) IMGFS_TSA(locks_excluded(__VA_ARGS__))
#define RETURN_CAPABILITY(x) IMGFS_TSA(lock_returned(x))
#define ASSERT_CAPABILITY(x) IMGFS_TSA(assert_capability(x))
#define NO_THREAD_SAFETY_ANALYSIS IMGFS_TSA(no_thread_safety_analysis)
