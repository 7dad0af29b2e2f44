//! A direct decoder for row groups whose chosen columns are all fixed-width and never null:
//! required integers and floats, and non-null `FixedSizeList`s of them, PLAIN-encoded without
//! a dictionary. That is the layout of pretext's own exports (`format: pretext`).
//!
//! The generic Arrow reader walks the repetition and definition levels value by value to
//! rebuild lists. Here they carry no information: every list holds `size` values and nothing
//! is null, so a column chunk is its pages' value bytes end to end. The pages are still read
//! by `parquet`'s own page reader; what this skips is the per-value level walk, which made
//! reading an export slower than making it. zstd pages (the default) are decompressed here,
//! straight into the column's buffer, without a page buffer in between.
//!
//! Nothing is taken on trust. Every page must be PLAIN with exactly one value per level, and
//! its repetition levels must start a row exactly every `size` values (checked run by run,
//! which costs little: a row is one bit-packed byte and one RLE run). A row group that fails
//! any check is read by the generic reader instead, which reports whatever is wrong with it.

use std::sync::Arc;

use arrow::array::ArrayData;
use arrow::array::{make_array, ArrayRef};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, FieldRef};
use bytes::Bytes;
use parquet::basic::{Compression, Encoding, Type as Physical};
use parquet::column::page::{Page, PageReader};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

/// One chosen column of a row group and how its values lie.
#[derive(Debug, Clone)]
pub struct FlatColumn {
    /// Its Arrow field (as the file's schema gives it).
    pub field: FieldRef,
    /// Index of its one Parquet leaf.
    pub leaf: usize,
}

/// The physical type and byte width of a fixed-width Arrow type.
fn physical(dt: &DataType) -> Option<(Physical, usize)> {
    Some(match dt {
        DataType::Int32 | DataType::UInt32 => (Physical::INT32, 4),
        DataType::Int64 | DataType::UInt64 => (Physical::INT64, 8),
        DataType::Float32 => (Physical::FLOAT, 4),
        DataType::Float64 => (Physical::DOUBLE, 8),
        _ => return None,
    })
}

/// The value type and row size of a column this decoder reads (`None`: the generic reader).
fn shape(field: &FieldRef) -> Option<(&DataType, usize)> {
    if field.is_nullable() {
        return None;
    }
    match field.data_type() {
        DataType::FixedSizeList(item, n) if !item.is_nullable() && *n > 0 => Some((item.data_type(), *n as usize)),
        DataType::FixedSizeList(..) => None,
        dt => Some((dt, 1)),
    }
}

/// The columns `fields` (the file's top-level fields at `roots`) of row group `group`, when
/// the footer alone allows the direct decoder: every one fixed-width and required, one leaf
/// each, without a dictionary page, and not encrypted.
pub fn plan(meta: &ParquetMetaData, group: usize, roots: &[usize], fields: &[FieldRef]) -> Option<Vec<FlatColumn>> {
    if !cfg!(target_endian = "little") || roots.is_empty() {
        return None;
    }
    let descr = meta.file_metadata().schema_descr();
    let rg = meta.row_group(group);
    roots
        .iter()
        .zip(fields)
        .map(|(&root, field)| {
            let (dt, size) = shape(field)?;
            let (ty, _) = physical(dt)?;
            let mut leaves = (0..descr.num_columns()).filter(|&c| descr.get_column_root_idx(c) == root);
            let leaf = leaves.next()?;
            if leaves.next().is_some() {
                return None;
            }
            let col = descr.column(leaf);
            let levels_fit = if size == 1 {
                col.max_rep_level() == 0 && col.max_def_level() == 0
            } else {
                col.max_rep_level() == 1 && col.max_def_level() == 1
            };
            let chunk = rg.column(leaf);
            (levels_fit && chunk.column_type() == ty && chunk.dictionary_page_offset().is_none())
                .then(|| FlatColumn { field: field.clone(), leaf })
        })
        .collect()
}

/// A column chunk's bytes, read at the file offsets the page reader asks for.
struct Chunk {
    bytes: Bytes,
    start: u64,
}

impl Length for Chunk {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for Chunk {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self.slice(start, self.bytes.len() as u64)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length as u64)
    }
}

impl Chunk {
    fn slice(&self, start: u64, length: u64) -> parquet::errors::Result<Bytes> {
        let from = start.checked_sub(self.start).filter(|&a| a <= self.bytes.len() as u64).ok_or_else(|| {
            parquet::errors::ParquetError::General(format!("offset {start} is outside the column chunk"))
        })? as usize;
        let to = (from as u64 + length).min(self.bytes.len() as u64) as usize;
        Ok(self.bytes.slice(from..to))
    }
}

/// Whether `levels` (`count` repetition levels of bit width 1, RLE / bit-packed hybrid, of the
/// values `first ..`) hold 0 exactly at the positions that are multiples of `size` and 1
/// everywhere else: rows of exactly `size` values.
fn rows_of(levels: &[u8], first: usize, count: usize, size: usize) -> bool {
    let (mut pos, end, mut i) = (first, first + count, 0);
    while pos < end {
        // The run header, an unsigned LEB128.
        let (mut header, mut shift) = (0usize, 0);
        loop {
            let Some(&b) = levels.get(i) else { return false };
            i += 1;
            if shift > 56 {
                return false;
            }
            header |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        if header & 1 == 1 {
            // Bit-packed: groups of 8 values, one byte each at width 1.
            let bytes = header >> 1;
            let Some(packed) = levels.get(i..i + bytes) else { return false };
            i += bytes;
            for &b in packed {
                for bit in 0..8 {
                    if pos == end {
                        break;
                    }
                    if ((b >> bit) & 1 == 1) != (pos % size != 0) {
                        return false;
                    }
                    pos += 1;
                }
            }
        } else {
            let n = header >> 1;
            let Some(&value) = levels.get(i) else { return false };
            i += 1;
            if n == 0 || pos + n > end {
                return false;
            }
            let fits = match value {
                // A run of row starts: only rows of one value.
                0 => size == 1,
                // A run inside one row, not crossing into the next.
                1 => pos % size != 0 && pos % size + n <= size,
                _ => false,
            };
            if !fits {
                return false;
            }
            pos += n;
        }
    }
    true
}

/// A column's values, end to end, appended page by page: `total` bytes after `head` bytes of
/// room, allocated at the first page (the room depends on it, see [`Values::inflate_v1`]).
/// The memory is not zeroed first: zeroing it cost as much as the copy this saves.
struct Values {
    buf: Vec<u8>,
    head: usize,
    total: usize,
    /// The zstd decompressor, when the chunk is zstd-compressed.
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    /// Bytes lent to a page's levels, put back afterwards.
    stash: Vec<u8>,
}

impl Values {
    fn new(total: usize, zstd: bool) -> parquet::errors::Result<Self> {
        let zstd = zstd.then(zstd::bulk::Decompressor::new).transpose()?;
        Ok(Values { buf: Vec::new(), head: 0, total, zstd, stash: Vec::new() })
    }

    /// Allocates the buffer with `head` bytes of room before the values, if it is not yet.
    fn alloc(&mut self, head: usize) {
        if self.buf.capacity() == 0 {
            // A multiple of 64 keeps the values as aligned as the allocation.
            self.head = head.next_multiple_of(64);
            self.buf = Vec::with_capacity(self.head + self.total);
            self.buf.resize(self.head, 0);
        }
    }

    /// Value bytes so far.
    fn len(&self) -> usize {
        self.buf.len().saturating_sub(self.head)
    }

    /// Appends `data`.
    fn copy(&mut self, data: &[u8]) {
        self.alloc(0);
        self.buf.extend_from_slice(data);
    }

    /// Decompresses the zstd frame `src` onto the end of the buffer (at most to its capacity):
    /// the bytes written.
    fn unpack(&mut self, src: &[u8]) -> std::io::Result<usize> {
        let at = self.buf.len() as u64;
        let mut end = std::io::Cursor::new(&mut self.buf);
        end.set_position(at);
        self.zstd.as_mut().expect("a zstd chunk").decompress_to_buffer(src, &mut end)
    }

    /// Appends the zstd frame `src` of exactly `len` bytes.
    fn inflate(&mut self, src: &[u8], len: usize) -> parquet::errors::Result<()> {
        self.alloc(0);
        let n = self.unpack(src)?;
        if n != len {
            return Err(ParquetError::General(format!("a page's values decompress to {n} bytes, not {len}")));
        }
        Ok(())
    }

    /// A version 1 page holds its levels and values in one compressed frame, levels first. When
    /// the frame states its size (parquet-rs and most writers record it), the levels take `lv`
    /// bytes = frame size − `len`, so the frame is decompressed to `lv` bytes before the end
    /// of the buffer and the values land where they belong. The `lv` bytes it overwrites (the
    /// end of the previous page's values, or the room at the start) are saved and put back;
    /// the levels are returned in `levels`. `false`: the frame does not state its size, states
    /// one too small, holds other than it states, or its levels do not fit; nothing changed.
    fn inflate_v1(&mut self, src: &[u8], len: usize, levels: &mut Vec<u8>) -> parquet::errors::Result<bool> {
        let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(src) else { return Ok(false) };
        let Some(lv) = usize::try_from(size).ok().and_then(|s| s.checked_sub(len)) else { return Ok(false) };
        // The size is read from the frame, not trusted: levels longer than any encoding of these
        // values' levels are for the general path (which bounds what it decompresses).
        if lv > level_bound(len) {
            return Ok(false);
        }
        self.alloc(lv);
        let end = self.buf.len();
        if lv > end || end + len > self.buf.capacity() {
            return Ok(false);
        }
        self.stash.clear();
        self.stash.extend_from_slice(&self.buf[end - lv..]);
        self.buf.truncate(end - lv);
        let done = self.unpack(src);
        let fits = matches!(done, Ok(n) if n == lv + len);
        if fits {
            levels.clear();
            levels.extend_from_slice(&self.buf[end - lv..end]);
            self.buf[end - lv..end].copy_from_slice(&self.stash);
        } else {
            self.buf.truncate(end - lv);
            self.buf.extend_from_slice(&self.stash);
        }
        done?;
        Ok(fits)
    }

    /// The values as a buffer of `total` bytes.
    fn finish(mut self) -> Buffer {
        self.alloc(0);
        let (head, bytes) = (self.head, self.buf.len() - self.head);
        let buf = Buffer::from_vec(self.buf).slice_with_length(head, bytes);
        // The allocator aligns what it hands out for any integer or float in practice, but does
        // not promise it for bytes: a misaligned buffer is copied into an aligned one.
        if buf.as_ptr().align_offset(8) == 0 {
            buf
        } else {
            Buffer::from_slice_ref(buf.as_slice())
        }
    }
}

/// The most bytes the repetition and definition levels of a version 1 page with `len` value
/// bytes can take: both sections' lengths, and per level at worst a byte and a run header
/// (values are at least 4 bytes wide).
fn level_bound(len: usize) -> usize {
    8 + 2 * (len / 4 + 16)
}

/// Repetition then definition levels of a version 1 page, each after its 4-byte length: the
/// repetition levels and the length of both sections. (A column of one value per row has
/// neither.)
fn v1_levels(b: &[u8], size: usize) -> Option<(&[u8], usize)> {
    if size == 1 {
        return Some((&b[..0], 0));
    }
    let section = |b: &[u8]| -> Option<usize> {
        let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        (b.len() >= 4 + len).then_some(4 + len)
    };
    let rep = section(b)?;
    let def = section(&b[rep..])?;
    Some((&b[4..rep], rep + def))
}

/// The values of column chunk `meta` (bytes `chunk`, `rows` rows of `col.size` values), end
/// to end; `None` when a page is not of the flat layout, an error when the chunk is unreadable.
///
/// zstd pages are decompressed by this function, straight into the column's buffer (the page
/// reader hands them over as they lie): for a pass over an export that is most of the work,
/// and decompressing into a page buffer first and copying its values out cost one more write
/// and read of every byte (8% of a pass) plus fresh memory for every page.
pub fn decode(
    chunk: Bytes,
    meta: &ColumnChunkMetaData,
    rows: usize,
    col: &FlatColumn,
) -> parquet::errors::Result<Option<ArrayRef>> {
    let (value_type, size) = shape(&col.field).expect("a planned column");
    let (_, width) = physical(value_type).expect("a planned column");
    let start = meta.byte_range().0;
    let total = rows * size;
    let zstd = matches!(meta.compression(), Compression::ZSTD(_));
    let as_stored;
    let pages_meta = if zstd {
        as_stored = meta.clone().into_builder().set_compression(Compression::UNCOMPRESSED).build()?;
        &as_stored
    } else {
        meta
    };
    let mut pages = SerializedPageReader::new(Arc::new(Chunk { bytes: chunk, start }), pages_meta, rows, None)?;
    let mut values = Values::new(total * width, zstd)?;
    let (mut levels, mut scratch) = (Vec::new(), Vec::new());
    let mut seen = 0usize;
    while let Some(page) = pages.get_next_page()? {
        let n = match &page {
            Page::DataPage { num_values, encoding: Encoding::PLAIN, .. }
            | Page::DataPageV2 { num_values, num_nulls: 0, encoding: Encoding::PLAIN, .. } => *num_values as usize,
            _ => return Ok(None),
        };
        if seen + n > total {
            return Ok(None);
        }
        let len = n * width;
        // The page's repetition levels (checked below), its values placed.
        let rep: &[u8] = match &page {
            Page::DataPage { buf, .. } => {
                // The page's levels and values together, or its levels alone with the values
                // already in place.
                let (page, placed): (&[u8], bool) = if !zstd {
                    (buf, false)
                } else if values.inflate_v1(buf, len, &mut levels)? {
                    (&levels, true)
                } else {
                    // A frame that does not state its size: decompressed aside, at most what a
                    // page of these values can hold (more is not a flat page).
                    scratch.clear();
                    let limit = (len + level_bound(len) + 1) as u64;
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(zstd::stream::read::Decoder::new(&buf[..])?, limit),
                        &mut scratch,
                    )?;
                    (&scratch, false)
                };
                let Some((rep, header)) = v1_levels(page, size) else { return Ok(None) };
                if page.len() != header + if placed { 0 } else { len } {
                    return Ok(None);
                }
                if !placed {
                    values.copy(&page[header..]);
                }
                rep
            }
            Page::DataPageV2 { buf, rep_levels_byte_len, def_levels_byte_len, is_compressed, .. } => {
                let (r, d) = (*rep_levels_byte_len as usize, *def_levels_byte_len as usize);
                let Some(data) = buf.get(r + d..) else { return Ok(None) };
                if zstd && *is_compressed {
                    values.inflate(data, len)?;
                } else if data.len() == len {
                    values.copy(data);
                } else {
                    return Ok(None);
                }
                &buf[..r]
            }
            _ => unreachable!("matched above"),
        };
        // One value per level (nothing null, no empty list), rows of exactly `size`.
        if size > 1 && !rows_of(rep, seen, n, size) {
            return Ok(None);
        }
        seen += n;
        debug_assert_eq!(values.len(), seen * width);
    }
    if seen != total {
        return Ok(None);
    }
    let values = ArrayData::try_new(value_type.clone(), total, None, 0, vec![values.finish()], vec![])?;
    let data = if size == 1 {
        values
    } else {
        ArrayData::try_new(col.field.data_type().clone(), rows, None, 0, vec![], vec![values])?
    };
    Ok(Some(make_array(data)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, FixedSizeListArray, Float64Array, Int32Array, RecordBatch, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::file::properties::{WriterProperties, WriterVersion};

    use super::{decode, plan, rows_of, Values};

    fn list(name: &str, size: i32, nullable: bool, values: Vec<i32>) -> (Field, ArrayRef) {
        let item = Arc::new(Field::new("item", DataType::Int32, false));
        let a = FixedSizeListArray::new(item.clone(), size, Arc::new(Int32Array::from(values)), None);
        (Field::new(name, DataType::FixedSizeList(item, size), nullable), Arc::new(a))
    }

    /// Rows of pretext's export layout plus a plain float column; `nullable` marks the first
    /// list nullable (which the direct decoder must leave alone).
    fn batch(rows: usize, size: i32, nullable: bool) -> RecordBatch {
        let n = rows * size as usize;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ids: Vec<i32> = (0..n).map(|_| (next() % 30_522) as i32).collect();
        let labels: Vec<i32> = ids.iter().map(|&t| if next() % 7 == 0 { t } else { -100 }).collect();
        let (f1, a1) = list("input_ids", size, nullable, ids);
        let (f2, a2) = list("labels", size, false, labels);
        let key = Arc::new(UInt64Array::from_iter_values((0..rows as u64).map(|r| r * 0x1_0000_0001)));
        let w = Arc::new(Float64Array::from_iter_values((0..rows).map(|r| r as f64 / 3.0)));
        let schema = Schema::new(vec![
            Field::new("example_key", DataType::UInt64, false),
            f1,
            f2,
            Field::new("weight", DataType::Float64, false),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![key, a1, a2, w]).unwrap()
    }

    fn write(batch: &RecordBatch, props: WriterProperties) -> Bytes {
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        Bytes::from(out)
    }

    /// Every row group through the direct decoder (`None` where it declines) and through the
    /// generic reader.
    fn both(file: &Bytes) -> Vec<(Option<RecordBatch>, RecordBatch)> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone()).unwrap();
        let (meta, schema) = (builder.metadata().clone(), builder.schema().clone());
        let roots: Vec<usize> = (0..schema.fields().len()).collect();
        (0..meta.num_row_groups())
            .map(|g| {
                let rg = meta.row_group(g);
                let generic = ParquetRecordBatchReaderBuilder::try_new(file.clone())
                    .unwrap()
                    .with_row_groups(vec![g])
                    .with_batch_size(1 << 20)
                    .build()
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap();
                let direct = plan(&meta, g, &roots, schema.fields()).and_then(|cols| {
                    let arrays: Option<Vec<ArrayRef>> = cols
                        .iter()
                        .map(|c| {
                            let (a, len) = rg.column(c.leaf).byte_range();
                            let chunk = file.slice(a as usize..(a + len) as usize);
                            decode(chunk, rg.column(c.leaf), rg.num_rows() as usize, c).unwrap()
                        })
                        .collect();
                    arrays.map(|a| RecordBatch::try_new(schema.clone(), a).unwrap())
                });
                (direct, generic)
            })
            .collect()
    }

    #[test]
    fn the_direct_decoder_reads_what_the_generic_reader_reads() {
        let data = batch(3000, 128, false);
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            for compression in [Compression::UNCOMPRESSED, Compression::SNAPPY, Compression::ZSTD(ZstdLevel::default())]
            {
                // Small pages and row groups: many pages per chunk, a short last row group.
                // (Version 2 writes integers DELTA-encoded unless told PLAIN.)
                let props = WriterProperties::builder()
                    .set_writer_version(version)
                    .set_encoding(Encoding::PLAIN)
                    .set_compression(compression)
                    .set_dictionary_enabled(false)
                    .set_data_page_size_limit(10_000)
                    .set_max_row_group_row_count(Some(1024))
                    .build();
                let file = write(&data, props);
                let groups = both(&file);
                assert_eq!(groups.len(), 3);
                for (direct, generic) in groups {
                    let direct = direct.unwrap_or_else(|| panic!("declined {version:?} {compression:?}"));
                    assert_eq!(direct, generic, "{version:?} {compression:?}");
                }
            }
        }
    }

    #[test]
    fn the_direct_decoder_declines_what_is_not_flat() {
        // A nullable list: the footer alone rules it out.
        let file = write(&batch(100, 16, true), WriterProperties::builder().set_dictionary_enabled(false).build());
        for (direct, _) in both(&file) {
            assert!(direct.is_none());
        }
        // Dictionary pages, or values in another encoding: declined page by page, still readable.
        let dict = WriterProperties::builder().set_dictionary_enabled(true).build();
        let delta = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_writer_version(WriterVersion::PARQUET_2_0)
            .set_column_encoding("labels.list.item".into(), Encoding::DELTA_BINARY_PACKED)
            .build();
        for props in [dict, delta] {
            let file = write(&batch(100, 16, false), props);
            for (direct, _) in both(&file) {
                assert!(direct.is_none());
            }
        }
    }

    #[test]
    fn zstd_pages_of_any_size_decode_in_place() {
        // Pages from a few values to whole row groups; lists of 128 and of 7 beside the scalar
        // columns.
        for (size, rows) in [(128, 700), (7, 5000)] {
            let data = batch(rows, size, false);
            for limit in [64, 1000, 50_000, 1 << 20] {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_dictionary_enabled(false)
                    .set_data_page_size_limit(limit)
                    .set_write_batch_size(64)
                    .set_max_row_group_row_count(Some(300))
                    .build();
                for (direct, generic) in both(&write(&data, props)) {
                    assert_eq!(
                        direct.unwrap_or_else(|| panic!("declined: rows of {size}, pages of {limit} bytes")),
                        generic,
                        "rows of {size}, pages of {limit} bytes"
                    );
                }
            }
        }
    }

    /// A version 1 page's frame: `levels` then `values`.
    fn frame(levels: &[u8], values: &[u8], states_size: bool) -> Vec<u8> {
        let page = [levels, values].concat();
        if states_size {
            zstd::bulk::compress(&page, 3).unwrap()
        } else {
            // A streaming encoder does not know the size it will have.
            let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
            std::io::Write::write_all(&mut e, &page).unwrap();
            e.finish().unwrap()
        }
    }

    #[test]
    fn a_version_1_frame_lands_its_values_in_place_and_its_levels_aside() {
        let first: Vec<u8> = (0..64u8).collect();
        let (levels, values) = (vec![7u8; 20], (100..164u8).collect::<Vec<u8>>());
        let mut v = Values::new(128, true).unwrap();
        v.copy(&first);
        let mut got = Vec::new();
        assert!(v.inflate_v1(&frame(&levels, &values, true), 64, &mut got).unwrap());
        assert_eq!(got, levels);
        // The previous page's values, overwritten by the levels for a moment, are back.
        assert_eq!(v.finish().as_slice(), [first, values].concat());
    }

    #[test]
    fn a_version_1_frame_goes_aside_when_it_cannot_land_in_place() {
        let (levels, values) = (vec![7u8; 20], vec![9u8; 64]);
        let mut got = Vec::new();
        // No size stated in the frame.
        let mut v = Values::new(64, true).unwrap();
        assert!(!v.inflate_v1(&frame(&levels, &values, false), 64, &mut got).unwrap());
        assert_eq!(v.len(), 0);
        // A size too small for the values.
        let mut v = Values::new(128, true).unwrap();
        assert!(!v.inflate_v1(&frame(&[], &values[..10], true), 64, &mut got).unwrap());
        // Levels longer than the room and values before them.
        let mut v = Values::new(128, true).unwrap();
        v.copy(&[1; 8]);
        assert!(!v.inflate_v1(&frame(&[7u8; 100], &values, true), 64, &mut got).unwrap());
        // A corrupt frame is an error, and leaves the buffer as it was.
        let mut bad = frame(&[7u8; 8], &values, true);
        let n = bad.len();
        bad[n / 2..].fill(0xAB);
        assert!(v.inflate_v1(&bad, 64, &mut got).is_err());
        assert_eq!(v.len(), 8);
        v.copy(&values);
        v.copy(&values[..56]);
        assert_eq!(v.finish().as_slice(), [&[1u8; 8][..], &values, &values[..56]].concat());
    }

    /// Bit-packed groups (header `groups << 1 | 1`, then one byte per 8 values) and RLE runs
    /// (header `n << 1`, then the value byte).
    #[test]
    fn repetition_levels_must_start_a_row_every_size_values() {
        // Rows of 16: 0 then seven 1s (bit-packed 0xFE), then an RLE run of eight 1s; twice.
        let two_rows = [0x03, 0xFE, 0x10, 0x01, 0x03, 0xFE, 0x10, 0x01];
        assert!(rows_of(&two_rows, 0, 32, 16));
        // Taken as rows of 8, the RLE runs cross row starts.
        assert!(!rows_of(&two_rows, 0, 32, 8));
        // A page starting mid-row sees the wrong levels at row starts.
        assert!(!rows_of(&two_rows, 3, 29, 16));
        // Truncated levels.
        assert!(!rows_of(&two_rows[..5], 0, 32, 16));
        // A row start where none belongs (0xFA: bit 2 clear).
        assert!(!rows_of(&[0x03, 0xFA, 0x10, 0x01], 0, 16, 16));
        // Rows of one: a run of zeros.
        assert!(rows_of(&[0x40, 0x00], 0, 32, 1));
        assert!(!rows_of(&[0x40, 0x01], 0, 32, 1));
    }
}
