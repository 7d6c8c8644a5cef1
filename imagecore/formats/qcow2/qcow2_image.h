// Qcow2Image: the qcow2 driver's open image.
//
// Locking: `meta_mu_` guards all metadata state (L1 table, both table
// caches, the refcount table, the allocation cursor and the header fields
// that change). Guest data is read and written in place without it: a host
// cluster, once allocated, stays where it is while the image is open (this
// driver never reuses a cluster it released in the same session), so a
// pread/pwrite after dropping the lock still hits the right cluster.
// Allocating writes keep the lock across the data write so that two writers
// of the same new cluster cannot both allocate it.
//
// Crash safety (kill -9 and power loss): metadata is written back in
// dependency order, with an fdatasync between levels:
//   data and refcount blocks -> sync -> refcount table -> sync
//   -> L2 tables -> sync -> L1 table -> sync -> release old clusters.
// So every pointer that reaches the disk points at data and carries a
// refcount that is already durable; a crash leaves at worst leaked clusters.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "base/table_cache.h"
#include "formats/qcow2/qcow2_format.h"
#include "formats/qcow2/qcow2_overlap.h"
#include "imagecore/format.h"
#include "imagecore/image.h"
#include "imagecore/mutex.h"
#include "imagecore/rwlock.h"

namespace imgfs::crypto {
class KeyedCipher;
class SectorCipher;
struct LuksHeader;
}

namespace imgfs::qcow2 {

// Entry i of a refcount block whose entries are 2^order bits wide.
uint64_t GetRefcount(const uint8_t* blk, uint64_t i, uint32_t order);

// One bitmap of a directory being rebuilt (qcow2_bitmap_ops.cpp).
struct BitmapSlot;

struct CheckPass;

class Qcow2Image final : public Image {
 public:
  // One entry of the snapshot table.
  struct SnapshotEntry {
    SnapshotInfo info;
    uint64_t l1_table_offset = 0;
    uint32_t l1_size = 0;
    uint32_t extra_len = 24;  // of its extra data as stored (v3 needs 16 at least)
  };
  static Result<std::unique_ptr<Image>> Open(std::unique_ptr<io::File> file, const OpenOptions& opts);
  ~Qcow2Image() override;

  const FormatDriver& driver() const override;
  // In whole sectors, as qemu reads it.
  uint64_t VirtualSize() const override { return header_.size / 512 * 512; }
  Status BlockStatus(uint64_t off, uint64_t len, Extent* out) override;
  Status ReadOpaque(uint64_t off, void* buf, size_t len) override;
  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) override;
  Status Flush() override;
  void DropCaches() override {
    MutexLock l(meta_mu_);
    l2_cache_.DropClean();
    refblock_cache_.DropClean();
  }
  Result<size_t> Compress(const uint8_t* in, size_t len, uint8_t* out, size_t cap) const override;
  Result<bool> WriteCompressed(uint64_t off, const uint8_t* data, size_t len) override;
  std::optional<BackingRef> Backing() const override;
  Status SetBacking(const std::string& name, const std::string& format, const Image* parent) override;
  std::vector<SnapshotInfo> Snapshots() const override;
  Result<std::unique_ptr<Image>> OpenSnapshot(const std::string& id) const override;
  Status ClaimWriting() override;
  // Why qemu would refuse this image's bitmaps extension ("" if it would not).
  std::string BitmapsProblem() const;
  std::string DamagedHeaderReason() const;
  using Image::Check;
  Result<CheckResult> Check(RepairMode mode, const ProgressFn& progress) override;
  Status CreateSnapshot(const std::string& name) override;
  Status DeleteSnapshot(const std::string& which) override;
  Status ApplySnapshot(const std::string& which) override;
  Status WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below) override;
  Status Resize(uint64_t new_size, const LayerReader* below) override;
  Status Preallocate(uint64_t off, uint64_t len, Prealloc mode) override;
  Status MakeEmpty() override;
  using Image::Amend;
  Status Amend(const std::map<std::string, std::string>& options, const ProgressFn& progress) override;
  bool StoresBitmaps() const override { return header_.version >= 3; }
  Result<DirtyBitmap> ReadBitmap(const std::string& name) override;
  Status ChangeBitmap(const std::string& name, const std::vector<BitmapChange>& steps) override;
  ImageInfo Info() const override;
  std::string DamageFound() const override;
  std::string KeyMissing() const override;
  bool MapShowsHostHoles() const override;
  const io::File& file() const override { return *file_; }
  std::vector<LayerFile> files() const override {
    if (data_file_) return {{file_.get(), FileRole::kImage}, {data_file_.get(), FileRole::kDataFile}};
    return {{file_.get(), FileRole::kImage}};
  }

 private:
  Qcow2Image(std::unique_ptr<io::File> file, Header h);
  // Reads the L1 table named by the header and decides the read-only reason.
  static Result<std::unique_ptr<Qcow2Image>> Load(std::unique_ptr<io::File> file, Header h);

  // --- snapshots (qcow2_snapshot.cpp) -------------------------------------
  // check_only (OpenOptions::check_only): entries and tables past the end
  // of the file read as zeros; damaged L1 fields are kept for the check.
  Status ReadSnapshotTable(bool check_only = false);
  // --- snapshot control (qcow2_snapshot_ops.cpp) --------------------------
  const SnapshotEntry* FindSnapshot(const std::string& which) const REQUIRES(meta_mu_);
  Result<std::vector<uint64_t>> ReadL1Locked(uint64_t offset, uint32_t entries) REQUIRES(meta_mu_);
  // Adds `delta` to the refcount of every L2 table and cluster reachable
  // from `l1`, as one more (or one less) L1 walk over them.
  Status AddRefsForL1Locked(const std::vector<uint64_t>& l1, int64_t delta) REQUIRES(meta_mu_);
  // Sets COPIED on the active tables' entries exactly where refcount == 1.
  Status FixCopiedFlagsLocked() REQUIRES(meta_mu_);
  // Writes `entries` as a new snapshot table, points the header at it, and
  // releases the old table.
  // Sets *header_switched once the header may name the new table.
  Status WriteSnapshotTableLocked(const std::vector<SnapshotEntry>& entries, bool* header_switched = nullptr) REQUIRES(meta_mu_);

  // --- mapping (qcow2_map.cpp) -------------------------------------------
  // Loads the L2 table at `l2_offset` through the cache.
  Result<uint8_t*> GetL2Locked(uint64_t l2_offset) REQUIRES(meta_mu_);
  // The L2 entry of guest cluster `c`, or 0 if its L2 table is absent.
  Result<uint64_t> L2EntryLocked(uint64_t c) REQUIRES(meta_mu_);
  // The entry and, with extended L2, its subcluster bitmap (else 0).
  Result<std::pair<uint64_t, uint64_t>> L2SlotLocked(uint64_t c) REQUIRES(meta_mu_);
  Status ReadCompressedCluster(uint64_t l2_entry, uint8_t* out);
  // Block status inside one extended L2 table.
  Status ExtendedStatus(const uint8_t* l2, uint64_t off, uint64_t limit, Extent* out);
  Status CheckHostOffset(uint64_t host, const char* what) const;
  // Whether [host, host+len) of the image file ends less than a cluster past
  // its end; CheckWithinFile makes it damage when not: writing or counting
  // there would grow the file toward garbage.
  bool WithinFile(uint64_t host, uint64_t len) const;
  Status CheckWithinFile(uint64_t host, uint64_t len, const char* what) const;
  // Logs `what`, makes the image read-only for good and returns the error
  // for the request that found it. Any thread, any lock.
  Status FoundDamage(const std::string& what) const;

  // --- writing (qcow2_write.cpp) ------------------------------------------
  Status PrepareForWriteLocked() REQUIRES(meta_mu_);
  // A 64-bit header field (feature words) written in place, then synced.
  Status WriteHeaderWordLocked(uint64_t offset, uint64_t value) REQUIRES(meta_mu_);
  // Snapshot control and shrinking change refcounts and COPIED flags in
  // several writes that no order keeps consistent at every step. On v3 the
  // dirty bit is made durable first, so that after a crash the next
  // read-write open (imgfs's or qemu's) rebuilds them; End clears it once
  // the operation `st` succeeded and is durable (a failure leaves it set:
  // the state may be half changed). v2 has no such bit.
  Status BeginRefcountWindowLocked() REQUIRES(meta_mu_);
  Status EndRefcountWindowLocked(Status st) REQUIRES(meta_mu_);
  Status CreateSnapshotLocked(const std::string& name, bool* undone) REQUIRES(meta_mu_);
  Status AddSnapshotEntryLocked(const std::string& name, unsigned long id, SnapshotEntry* out, bool* named) REQUIRES(meta_mu_);
  bool UndoSnapshotLocked(const SnapshotEntry& e) REQUIRES(meta_mu_);
  Status DeleteSnapshotLocked(const std::string& which) REQUIRES(meta_mu_);
  Status ApplySnapshotLocked(const std::string& which) REQUIRES(meta_mu_);
  Status MarkBitmapsInUseLocked(bool all) REQUIRES(meta_mu_);
  // --- dirty bitmaps kept in step (qcow2_bitmaps.cpp) ----------------------
  // An enabled bitmap held in memory from the first write to a clean close.
  struct TrackedBitmap {
    uint64_t pos = 0;  // of its entry in the bitmap directory
    uint32_t granularity_bits = 0;
    bool enabled = true;  // records changes (auto); a disabled one is held only to be resized
    std::vector<uint8_t> bits;          // bit i (LSB first) covers [i << g, (i+1) << g)
    std::vector<uint64_t> old_table;    // released once the new one is in place
    uint64_t old_table_offset = 0;
  };
  // The bitmap directory, or nothing while the extension is not marked
  // consistent (autoclear bit clear).
  Result<std::vector<uint8_t>> ReadBitmapDirectory() const;
  Result<bool> LoadBitmapLocked(const BitmapDirEntry& e, TrackedBitmap* out) REQUIRES(meta_mu_);
  // The table of entry `e`, checked; false where it cannot be used
  // (damaged or outdated table, other type). Its bytes of bits: BitmapBytes.
  Result<bool> ReadBitmapTableLocked(const BitmapDirEntry& e, std::vector<uint64_t>* table) const REQUIRES(meta_mu_);
  uint64_t BitmapBytes(const BitmapDirEntry& e) const;
  // The bits of entry `e` (and its table's entries); false where they
  // cannot be read exactly (damaged or outdated table, other type).
  Result<bool> ReadBitmapBitsLocked(const BitmapDirEntry& e, std::vector<uint8_t>* bits,
                                    std::vector<uint64_t>* table) const REQUIRES(meta_mu_);
  // Writes `bits` to new clusters, then their table: its offset and size.
  Result<std::pair<uint64_t, uint32_t>> WriteBitmapTableLocked(const std::vector<uint8_t>& bits) REQUIRES(meta_mu_);
  // Queues the release of a stored bitmap's table and data clusters.
  void ReleaseBitmapTableLocked(const std::vector<uint64_t>& table, uint64_t table_offset) REQUIRES(meta_mu_);
  // qemu-img bitmap's steps (qcow2_bitmap_ops.cpp).
  // The directory (*dir) and a slot for each of its bitmaps.
  Result<std::vector<BitmapSlot>> LoadBitmapSlotsLocked(std::vector<uint8_t>* dir) REQUIRES(meta_mu_);
  Status ApplyBitmapStepLocked(std::vector<BitmapSlot>& slots, const std::string& name, const BitmapChange& step) REQUIRES(meta_mu_);
  Status StoreBitmapDirectoryLocked(std::vector<BitmapSlot>& slots, const std::vector<uint8_t>& old_dir) REQUIRES(meta_mu_);
  Status RemoveAllBitmapsLocked() REQUIRES(meta_mu_);

  // Rebuilds the refcounts of an image a crash left dirty (qcow2_driver.cpp).
  void RepairIfLeftDirty();

  // --- the header cluster rewritten (qcow2_header_write.cpp) --------------
  struct HeaderCluster {
    std::vector<uint8_t> fixed;      // the fixed fields, header_length bytes as on disk
    std::vector<RawExtension> exts;  // in their order
  };
  Result<HeaderCluster> ReadHeaderClusterLocked() const REQUIRES(meta_mu_);
  // One write of `hc` and `backing_name`, synced; header_'s backing fields
  // follow. `what` names the part that would not fit, for the error.
  Status WriteHeaderClusterLocked(const HeaderCluster& hc, const std::string& backing_name, const char* what) REQUIRES(meta_mu_);
  // `h`'s version and v3 fields, the rest as on disk; the extensions but
  // those of the types in `drop`.
  Status RewriteHeaderLocked(Header h, const std::vector<uint32_t>& drop) REQUIRES(meta_mu_);
  Status SetDataFileNameLocked(const std::string& name) REQUIRES(meta_mu_);
  // --- amend (qcow2_amend.cpp, qcow2_compat.cpp) ---------------------------
  Status UpgradeLocked() REQUIRES(meta_mu_);
  // The refusals of a downgrade, before anything changes.
  Status CanDowngradeLocked() REQUIRES(meta_mu_);
  Status DowngradeLocked() REQUIRES(meta_mu_);
  // Zero clusters (v3 only) become clusters of zeros or, where nothing
  // shows through, unallocated ones, in every L1 walk.
  Status ExpandZeroClustersLocked() REQUIRES(meta_mu_);
  Status ExpandZeroClustersInL2Locked(uint64_t l2_off) REQUIRES(meta_mu_);
  Status ChangeRefcountOrderLocked(uint32_t order) REQUIRES(meta_mu_);
  Status LoadTrackedBitmapsLocked() REQUIRES(meta_mu_);
  // Before a resize: every bitmap that can be kept exact is held, enabled
  // or not, so that it is stored at its new size (as qemu resizes them).
  Status TrackAllBitmapsLocked() REQUIRES(meta_mu_);
  // After a resize to `size`: new bits are clear, cut bits are gone; a
  // bitmap that would outgrow the memory limit is left in_use.
  void ResizeTrackedBitmapsLocked(uint64_t size) REQUIRES(meta_mu_);
  // The disk changed at [off, off+len): every tracked bitmap records it.
  void MarkDirtyLocked(uint64_t off, uint64_t len) REQUIRES(meta_mu_);
  Status StoreTrackedBitmapsLocked() REQUIRES(meta_mu_);
  // The L2 table for guest cluster `c`, allocating it if absent.
  Result<uint64_t> L2OffsetForWriteLocked(uint64_t c) REQUIRES(meta_mu_);
  Result<uint64_t> CowL2TableLocked(uint64_t l1_index) REQUIRES(meta_mu_);
  // Writes the run at `off` into newly allocated clusters; on return *len
  // is how much of it was written and [*host_written, +*host_len) the host
  // range that now holds it.
  Status AllocatingWriteLocked(uint64_t off, const uint8_t* buf, uint64_t* len, const LayerReader* below,
                               uint64_t* host_written, uint64_t* host_len) REQUIRES(meta_mu_);
  Status MapNewRunLocked(uint64_t l2_off, uint64_t c0, uint64_t host, const std::vector<uint64_t>& old,
                         uint64_t wlen, uint64_t* len) REQUIRES(meta_mu_);
  bool CowReadsZero(uint64_t c, uint64_t entry, uint64_t bitmap, uint64_t from, uint64_t to,
                    const LayerReader* below) const;
  Status CowSourceLocked(uint64_t c, uint64_t entry, uint64_t bitmap, uint64_t from, uint64_t to, uint8_t* out,
                         const LayerReader* below) REQUIRES(meta_mu_);
  bool InPlace(uint64_t entry, uint64_t bitmap) const;
  // --- compressed clusters (qcow2_compressed_write.cpp) ------------------
  // Places `len` compressed bytes in the image file, packed after the ones
  // placed before; returns their offset. Refcounts count each compressed
  // cluster once in every host cluster its bytes touch.
  Result<uint64_t> PlaceCompressedLocked(uint64_t len) REQUIRES(meta_mu_);
  // --- extended L2 subclusters (qcow2_subcluster.cpp) ----------------------
  // Whether a write into the cluster with entry `e` may allocate only the
  // subclusters it touches.
  bool SubclusterWritable(uint64_t e) const;
  // Writes [off, off+len), inside one cluster, subcluster by subcluster.
  Status SubclusterWriteLocked(uint64_t off, const uint8_t* buf, uint64_t len, const LayerReader* below) REQUIRES(meta_mu_);

  // --- zeroing and discarding (qcow2_zero.cpp) ---------------------------
  // Clears guest clusters from `c` to `end` or to the end of c's L2 table,
  // whichever is first: unallocated, or zero clusters with `zero` (v3).
  // Returns the first cluster not reached.
  Result<uint64_t> ClearClustersLocked(uint64_t c, uint64_t end, bool zero) REQUIRES(meta_mu_);

  // --- resize (qcow2_resize.cpp) ------------------------------------------
  // Writes size, L1 size and L1 offset in one header write, then syncs.
  Status WriteSizeFieldsLocked(uint64_t size, uint32_t l1_size, uint64_t l1_offset) REQUIRES(meta_mu_);
  Status GrowLockedTo(uint64_t new_size) REQUIRES(meta_mu_);
  Status ShrinkLockedTo(uint64_t new_size) REQUIRES(meta_mu_);
  Status DropL2TableLocked(size_t l1_index) REQUIRES(meta_mu_);

  // --- check and repair (qcow2_check.cpp) --------------------------------
  // One pass: counts references, compares with refcounts and COPIED flags;
  // with `fix` set, makes refcounts and flags match what it found.
  // `plain_refs`, if given, receives the references counted without the
  // refcount structures; `rebuild` is set when those structures cannot be
  // trusted (bad table entries, a block that overlaps other data).
  Status CompleteSnapshotEntriesLocked(CheckResult* r) REQUIRES(meta_mu_);
  Status CheckEntryBitsLocked(const uint8_t* table, uint64_t l2, uint64_t j, bool repair, CheckResult* r) REQUIRES(meta_mu_);
  Status CheckPassLocked(RepairMode fix, CheckResult* out, std::vector<uint64_t>* plain_refs = nullptr,
                         bool* rebuild = nullptr) REQUIRES(meta_mu_);
  // The steps of one pass, in order; `p` holds what they count.
  Status CheckHeaderLocked(CheckPass& p) REQUIRES(meta_mu_);
  Status CountBitmapRefsLocked(CheckPass& p) REQUIRES(meta_mu_);
  Status WalkL1Locked(CheckPass& p, const std::vector<uint64_t>& l1, bool active) REQUIRES(meta_mu_);
  // The L2 table of L1 entry `i`, or 0 where there is none to walk.
  uint64_t CheckL1EntryLocked(CheckPass& p, const std::vector<uint64_t>& l1, uint64_t i, bool active)
      REQUIRES(meta_mu_);
  Status RecountL2Locked(CheckPass& p, uint64_t l2) REQUIRES(meta_mu_);
  Status WalkL2Locked(CheckPass& p, uint64_t l2, bool active) REQUIRES(meta_mu_);
  Status GiveZeroedClusterLocked(CheckPass& p, uint64_t l2, uint64_t j, const char* what, uint64_t host)
      REQUIRES(meta_mu_);
  Status CountSnapshotRefsLocked(CheckPass& p) REQUIRES(meta_mu_);
  Status CheckCopiedLocked(CheckPass& p, std::vector<std::string>* messages) REQUIRES(meta_mu_);
  void CountRefcountStructuresLocked(CheckPass& p, bool* rebuild) REQUIRES(meta_mu_);
  Status CompareRefcountsLocked(CheckPass& p) REQUIRES(meta_mu_);
  // Refcount table entries with reserved bits, unaligned, or past the end.
  Result<uint64_t> BadRefTableEntriesLocked(CheckResult* out) REQUIRES(meta_mu_);
  Status LeaksPastEndLocked(uint64_t end, RepairMode fix, CheckResult* r) REQUIRES(meta_mu_);

  // --- overlap check (qcow2_overlap.cpp) ----------------------------------
  Status BuildOverlapMapLocked() REQUIRES(meta_mu_);
  // Damage (and the corrupt bit) if [host, host+len) holds metadata other
  // than the kinds in `allowed` (a MetaKind mask; 0 for guest data).
  Status CheckOverlapLocked(uint64_t host, uint64_t len, uint16_t allowed, const char* what) REQUIRES(meta_mu_);

  // --- refcounts (qcow2_refcount.cpp) -------------------------------------
  // Loads the refcount table; a block that lies where no block can is
  // damage, or with `lenient` (a check, which reports it) left out.
  Status LoadRefTableLocked(bool lenient = false) REQUIRES(meta_mu_);
  Status FindEndLocked() REQUIRES(meta_mu_);
  // Reserves n contiguous free clusters (reused ones first, else at the
  // end of the file) and sets their refcount to 1.
  Result<uint64_t> AllocateClustersLocked(uint64_t n) REQUIRES(meta_mu_);
  // Up to max_n clusters for guest data: the lowest free run (*got of
  // them, maybe fewer), or at the end of the file when none is free.
  Result<uint64_t> AllocateRunLocked(uint64_t max_n, uint64_t* got) REQUIRES(meta_mu_);
  // Both: `exact` runs of n, or the lowest run up to n (*got).
  Result<uint64_t> AllocateLocked(uint64_t n, bool exact, uint64_t* got) REQUIRES(meta_mu_);
  Result<uint64_t> TakeFreeRunLocked(uint64_t max_n, uint64_t* got) REQUIRES(meta_mu_);
  // Moves clusters no read can still use from quarantine_ to free_, and
  // gives their space back to the host (a punched hole).
  void ReleaseQuarantineLocked() REQUIRES(meta_mu_);
  // Punches the clusters of [c, c+n) that still have refcount 0.
  void DiscardFreeLocked(uint64_t c, uint64_t n) REQUIRES(meta_mu_);
  // A free run of n clusters from free_, or 0 (cluster 0 is the header).
  // Each is checked to still have refcount 0 (a repair may have counted it).
  Result<uint64_t> TakeFreeLocked(uint64_t n) REQUIRES(meta_mu_);
  // Refcount of `cluster` reached zero.
  void ClusterFreedLocked(uint64_t cluster) REQUIRES(meta_mu_);
  // The clusters below the end whose refcount is 0, into free_.
  Status FindFreeLocked() REQUIRES(meta_mu_);
  // At close: the file ends at its last used cluster (what a commit
  // emptied, or reuse left free at the end, goes back to the host).
  Status TrimTailLocked() REQUIRES(meta_mu_);
  Status AddRefLocked(uint64_t cluster, int64_t delta) REQUIRES(meta_mu_);
  // To `value` (a check's repair: 64-bit refcounts go past int64_t).
  Status SetRefLocked(uint64_t cluster, uint64_t value) REQUIRES(meta_mu_);
  void StoreRefLocked(uint8_t* blk, uint64_t cluster, uint64_t cur, uint64_t value) REQUIRES(meta_mu_);
  Result<uint64_t> RefcountLocked(uint64_t cluster) REQUIRES(meta_mu_);
  Result<uint8_t*> RefBlockForLocked(uint64_t cluster, bool create) REQUIRES(meta_mu_);
  Status GrowRefTableLocked(uint64_t min_entries) REQUIRES(meta_mu_);
  // `order`: the refcount width of the new structure (the header's unless
  // amend changes it; the header switches to it in the same write).
  Status RebuildRefcountsLocked(const std::vector<uint64_t>& refs, uint32_t order) REQUIRES(meta_mu_);
  // Writes back dirty metadata in crash-safe order; see the file comment.
  Status FlushMetadataLocked(bool apply_releases) REQUIRES(meta_mu_);
  Status WriteL1Locked() REQUIRES(meta_mu_);
  Status WriteRefTableLocked() REQUIRES(meta_mu_);

  const std::unique_ptr<io::File> file_;
  // The external data file (data_file=...), or null: guest clusters then
  // live in it at their guest offsets and are not refcounted.
  std::unique_ptr<io::File> data_file_;
  io::File& data() const { return data_file_ ? *data_file_ : *file_; }

  // --- encryption (qcow2_crypt.cpp) ---------------------------------------
  // Guest data of an encrypted image goes through these: `host` where it
  // lies, `guest` the disk offset it holds. Without encryption they are
  // data().PRead and PWrite.
  bool encrypted() const { return header_.crypt_method != 0; }
  // Opens the cipher with the key given for the file (keyring.h); without
  // one the image stays locked and its data refuses to be read or written.
  Status SetUpCrypto();
  Status ReadData(uint64_t host, uint64_t guest, void* buf, size_t len) const;
  Status WriteData(uint64_t host, uint64_t guest, const void* buf, size_t len);
  Status WriteDataPieces(uint64_t host, uint64_t guest, const io::File::Piece* pieces, size_t count);
  ImageInfo::Field CryptoInfo() const;
  // The cipher now, following the keyring (a key given or forgotten since
  // the open counts); kNoKey where there is none.
  Result<std::shared_ptr<const crypto::SectorCipher>> Cipher() const;
  // Set at open, shared with snapshot views; null: not encrypted.
  std::shared_ptr<crypto::KeyedCipher> keyed_;
  std::shared_ptr<const crypto::LuksHeader> luks_;  // crypt_method 2
  // Shared: whole-sector writes; exclusive: a partial sector's
  // read-modify-write (two of those in one sector must not interleave).
  RwLock crypt_rmw_mu_;
  // Whether a standard L2 entry names a host cluster (with a data file,
  // guest cluster 0 lives at offset 0, marked by COPIED alone).
  bool HasHost(uint64_t e) const { return (e & kOffsetMask) || (data_file_ && (e & kOflagCopied)); }
  Header header_;  // fields refcount_table_* and autoclear change under meta_mu_
  const uint32_t cluster_bits_;
  const uint64_t cluster_size_;
  const bool extended_l2_;      // 16-byte L2 entries with subcluster bitmaps
  const uint64_t entry_bytes_;  // 8, or 16 with extended L2
  const uint64_t l2_entries_;
  uint64_t refblock_entries_;  // changes only with refcount_order (amend, exclusive)

  std::vector<SnapshotEntry> snapshots_ GUARDED_BY(meta_mu_);
  uint64_t snapshot_table_bytes_ GUARDED_BY(meta_mu_) = 0;

  // Where the last read-ahead hint for compressed data ended (a hint only:
  // races between readers cost at most a repeated hint).
  mutable std::atomic<uint64_t> prefetched_until_{0};
  mutable std::atomic<uint64_t> last_compressed_end_{0};

  mutable Mutex meta_mu_;
  // Where the next compressed cluster's bytes go, and the end of the host
  // clusters allocated for them (0: none). A cluster up to the cursor holds
  // compressed bytes already; one past it only its allocation's refcount.
  uint64_t compressed_next_ GUARDED_BY(meta_mu_) = 0;
  uint64_t compressed_end_ GUARDED_BY(meta_mu_) = 0;
  std::vector<uint64_t> l1_ GUARDED_BY(meta_mu_);  // host byte order
  bool l1_dirty_ GUARDED_BY(meta_mu_) = false;
  TableCache l2_cache_ GUARDED_BY(meta_mu_);
  TableCache refblock_cache_ GUARDED_BY(meta_mu_);
  std::vector<uint64_t> reftable_ GUARDED_BY(meta_mu_);  // loaded on first write
  bool reftable_loaded_ GUARDED_BY(meta_mu_) = false;
  bool reftable_dirty_ GUARDED_BY(meta_mu_) = false;
  uint64_t end_cluster_ GUARDED_BY(meta_mu_) = 0;  // first never-used cluster
  bool end_known_ GUARDED_BY(meta_mu_) = false;
  bool write_prepared_ GUARDED_BY(meta_mu_) = false;
  std::vector<TrackedBitmap> tracked_ GUARDED_BY(meta_mu_);
  // The progress of the exclusive operation under way (check, amend), or
  // null: told how far the walk over the active L1 table (or the zero
  // expansion) is.
  const ProgressFn* op_progress_ GUARDED_BY(meta_mu_) = nullptr;
  // Metadata found damaged while serving I/O: from then on the image is
  // read-only, as qemu does, and the next write attempt sets the corrupt
  // bit on disk so later users run a check first. The flag is set from any
  // thread; `damage_` is written once, under damage_mu_, before it.
  mutable std::atomic<bool> damaged_{false};
  mutable Mutex damage_mu_;
  mutable std::string damage_ GUARDED_BY(damage_mu_);
  bool corrupt_bit_written_ GUARDED_BY(meta_mu_) = false;
  bool window_dirty_ GUARDED_BY(meta_mu_) = false;  // Begin set the dirty bit
  // Host byte ranges whose references were replaced in memory; their
  // refcounts drop only after the new pointers are durable.
  std::vector<std::pair<uint64_t, uint64_t>> pending_release_ GUARDED_BY(meta_mu_);

  // Metadata clusters, for the check before every write (qcow2_overlap.cpp).
  OverlapMap overlap_ GUARDED_BY(meta_mu_);
  bool overlap_built_ GUARDED_BY(meta_mu_) = false;
  // Free clusters below the end of the file, handed out before the file
  // grows. Clusters freed while mounted wait in quarantine_, as runs tagged
  // with the read epoch of their last free, until no read that may still
  // use them is in flight; then they are punched and join free_. At most
  // kMaxFreeTracked clusters (free_) and runs (quarantine_) are remembered;
  // the rest stay free on disk and are found again at the next open.
  static constexpr size_t kMaxFreeTracked = 1 << 18;
  struct FreedRun {
    uint64_t start, count, tag;
  };
  std::set<uint64_t> free_ GUARDED_BY(meta_mu_);
  std::deque<FreedRun> quarantine_ GUARDED_BY(meta_mu_);
  bool free_scanned_ GUARDED_BY(meta_mu_) = false;
};

}  // namespace imgfs::qcow2
