//! `pretext preview`: the first examples of the stream, decoded, with the pretext corruption
//! visible.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;

use crate::error::Result;
use crate::task::list_values;
use crate::task::mlm::IGNORE;
use crate::tokenize::TextTokenizer;

/// Legend printed under MLM previews.
pub const MLM_LEGEND: &str =
    "legend: [MASK=x] masked (label x) · {y=x} replaced by random y (label x) · (x) kept, still predicted";

/// Renders the MLM examples of `batch` (at most `limit`), numbering from `first`.
/// ` · source <name>` for an example of a mixture, else nothing.
fn source_tag(batch: &RecordBatch, row: usize) -> String {
    let Some(d) = batch.column_by_name("source").and_then(|c| c.as_dictionary_opt::<arrow::datatypes::Int16Type>())
    else {
        return String::new();
    };
    let Some(values) = d.values().as_string_opt::<i32>() else { return String::new() };
    format!(" · source {}", values.value(d.keys().value(row) as usize))
}

pub fn render_mlm(tok: &TextTokenizer, batch: &RecordBatch, first: usize, limit: usize) -> Result<String> {
    let keys = batch.column(0).as_primitive::<UInt64Type>();
    let width = match batch.schema().field_with_name("input_ids")?.data_type() {
        arrow::datatypes::DataType::FixedSizeList(_, n) => *n as usize,
        _ => 0,
    };
    let ids = list_values(batch, "input_ids")?;
    let labels = list_values(batch, "labels")?;
    let attention = list_values(batch, "attention_mask")?;
    let mask_id = tok.specials.mask.map(|m| m as i32);
    let mut out = String::new();
    for row in 0..batch.num_rows().min(limit) {
        let r = row * width..(row + 1) * width;
        let (ids, labels, attention) = (&ids[r.clone()], &labels[r.clone()], &attention[r]);
        let real = attention.iter().filter(|&&a| a != 0).count();
        let selected = labels.iter().filter(|&&l| l != IGNORE).count();
        out.push_str(&format!(
            "--- example {} · example_key {}{} · {} tokens ({} padding) · {} selected ---\n",
            first + row + 1,
            keys.value(row),
            source_tag(batch, row),
            width,
            width - real,
            selected
        ));
        let mut text = String::new();
        let mut run: Vec<u32> = Vec::new();
        let sep = if tok.hf().is_some() { " " } else { "" };
        let flush = |run: &mut Vec<u32>, text: &mut String| {
            if !run.is_empty() {
                if !text.is_empty() {
                    text.push_str(sep);
                }
                text.push_str(&tok.decode(run));
                run.clear();
            }
        };
        for i in 0..real {
            if labels[i] == IGNORE {
                run.push(ids[i] as u32);
                continue;
            }
            flush(&mut run, &mut text);
            if !text.is_empty() {
                text.push_str(sep);
            }
            let label = tok.token(labels[i] as u32);
            if Some(ids[i]) == mask_id && labels[i] != ids[i] {
                text.push_str(&format!("[MASK={label}]"));
            } else if ids[i] != labels[i] {
                text.push_str(&format!("{{{}={label}}}", tok.token(ids[i] as u32)));
            } else {
                text.push_str(&format!("({label})"));
            }
        }
        flush(&mut run, &mut text);
        out.push_str(&text);
        if real < width {
            out.push_str(&format!(" [PAD]×{}", width - real));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Renders examples of any task: every token-id column decoded (padding and −100 dropped);
/// packed causal rows show their documents separated by ` ‖ `.
pub fn render_generic(tok: &TextTokenizer, batch: &RecordBatch, first: usize, limit: usize) -> Result<String> {
    use arrow::datatypes::DataType;
    let keys = batch.column(0).as_primitive::<UInt64Type>();
    let pad = tok.specials.pad.map(|p| p as i32);
    let schema = batch.schema();
    let mut out = String::new();
    for row in 0..batch.num_rows().min(limit) {
        out.push_str(&format!(
            "--- example {} · example_key {}{} ---\n",
            first + row + 1,
            keys.value(row),
            source_tag(batch, row)
        ));
        let segments = match schema.field_with_name("segment_ids") {
            Ok(f) => match f.data_type() {
                DataType::FixedSizeList(_, n) => {
                    let n = *n as usize;
                    Some(list_values(batch, "segment_ids")?[row * n..(row + 1) * n].to_vec())
                }
                _ => None,
            },
            Err(_) => None,
        };
        for field in schema.fields().iter().skip(1) {
            let name = field.name();
            let DataType::FixedSizeList(_, n) = field.data_type() else { continue };
            if name.starts_with("attention_mask")
                || matches!(name.as_str(), "position_ids" | "segment_ids" | "special_tokens_mask")
            {
                continue;
            }
            let n = *n as usize;
            let values = &list_values(batch, name)?[row * n..(row + 1) * n];
            let text = match &segments {
                Some(seg) if name == "input_ids" => {
                    let mut docs: Vec<String> = Vec::new();
                    let mut start = 0;
                    for i in 1..=n {
                        if i == n || seg[i] != seg[i - 1] {
                            if seg[start] != 0 {
                                let ids: Vec<u32> = values[start..i].iter().map(|&v| v as u32).collect();
                                docs.push(tok.decode(&ids));
                            }
                            start = i;
                        }
                    }
                    format!("{} document(s): {}", docs.len(), docs.join(" ‖ "))
                }
                _ => {
                    let ids: Vec<u32> =
                        values.iter().filter(|&&v| v != IGNORE && Some(v) != pad).map(|&v| v as u32).collect();
                    tok.decode(&ids)
                }
            };
            out.push_str(&format!("  {name}: {text}\n"));
        }
    }
    Ok(out)
}

/// The image columns a contact sheet shows for `task`, in order.
pub fn image_columns(batch: &RecordBatch) -> Vec<String> {
    let names = ["pixel_values", "noisy", "clean"];
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().to_string())
        .filter(|n| n.starts_with("view_") || names.contains(&n.as_str()))
        .collect()
}

/// One line per image example: key, label and the value range of each image column.
pub fn render_images(batch: &RecordBatch, first: usize, limit: usize) -> Result<String> {
    let keys = batch.column(0).as_primitive::<UInt64Type>();
    let label = batch.column_by_name("label").map(|l| l.as_primitive::<arrow::datatypes::Int64Type>().clone());
    let cols = image_columns(batch);
    let mut out = String::new();
    for row in 0..batch.num_rows().min(limit) {
        out.push_str(&format!(
            "--- example {} · example_key {}{}",
            first + row + 1,
            keys.value(row),
            source_tag(batch, row)
        ));
        if let Some(l) = &label {
            if l.is_valid(row) {
                out.push_str(&format!(" · label {}", l.value(row)));
            }
        }
        out.push_str(" ---\n");
        for c in &cols {
            let values = crate::task::vision::f32_values(batch, c)?;
            let w = values.len() / batch.num_rows().max(1);
            let v = &values[row * w..(row + 1) * w];
            let mean = v.iter().sum::<f32>() / w as f32;
            let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            out.push_str(&format!("{c:>14}: {w} values, mean {mean:+.3}, range [{lo:+.3}, {hi:+.3}]\n"));
        }
        if batch.column_by_name("mask").is_some() {
            let mask = crate::task::vision::bool_values(batch, "mask")?;
            let n = mask.len() / batch.num_rows().max(1);
            let m = mask[row * n..(row + 1) * n].iter().filter(|&&x| x).count();
            out.push_str(&format!("{:>14}: {m} of {n} patches masked\n", "mask"));
        }
    }
    Ok(out)
}

/// Tabular examples: one table per example, a line per feature with its value, its corrupted
/// value (`*` where replaced) and `?` where the source was null (imputed).
pub fn render_table(batch: &RecordBatch, columns: &[String], first: usize, limit: usize) -> Result<String> {
    let keys = batch.column(0).as_primitive::<UInt64Type>();
    let feat = crate::task::vision::f32_values(batch, "features")?;
    let cor = crate::task::vision::f32_values(batch, "corrupted")?;
    let mask = crate::task::vision::bool_values(batch, "corruption_mask")?;
    let missing = crate::task::vision::bool_values(batch, "missing_mask")?;
    let c = columns.len();
    let width = columns.iter().map(|s| s.len()).max().unwrap_or(0).max(7);
    let mut out = String::new();
    for row in 0..batch.num_rows().min(limit) {
        let replaced = mask[row * c..(row + 1) * c].iter().filter(|&&m| m).count();
        out.push_str(&format!(
            "--- example {} · example_key {}{} · {replaced} of {c} features corrupted ---\n",
            first + row + 1,
            keys.value(row),
            source_tag(batch, row)
        ));
        out.push_str(&format!("{:<width$}  {:>12}  {:>12}\n", "feature", "value", "corrupted"));
        for (j, name) in columns.iter().enumerate() {
            let i = row * c + j;
            out.push_str(&format!(
                "{:<width$}  {:>11.4}{}  {:>11.4}{}\n",
                name,
                feat[i],
                if missing[i] { "?" } else { " " },
                cor[i],
                if mask[i] { "*" } else { " " },
            ));
        }
    }
    Ok(out)
}

/// Legend printed under tabular previews.
pub const TABLE_LEGEND: &str = "legend: * replaced from the column's marginal · ? null in the source (imputed)";

/// Writes a PNG contact sheet: a row per example, a tile per image column (MAE adds the masked
/// input, hidden patches grey), pixels un-normalised with `mean` / `std` and upscaled to at least
/// 96 pixels.
pub fn contact_sheet(
    batch: &RecordBatch,
    rows: usize,
    out: &crate::task::vision::ImageOut,
    patch_size: Option<usize>,
    path: &std::path::Path,
) -> Result<()> {
    let cols = image_columns(batch);
    let mask = match batch.column_by_name("mask") {
        Some(_) => Some(crate::task::vision::bool_values(batch, "mask")?),
        None => None,
    };
    let tiles = cols.len() + mask.is_some() as usize;
    let (s, ch) = (out.size, out.channels);
    let scale = (96 / s).max(1);
    let (tile, gap) = (s * scale, 4);
    let rows = rows.min(batch.num_rows());
    let (w, h) = (tiles * (tile + gap) + gap, rows * (tile + gap) + gap);
    let mut sheet = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    let plane = s * s;
    let mut draw = |r: usize, t: usize, img: &[f32], hidden: Option<&[bool]>| {
        for y in 0..s {
            for x in 0..s {
                let mut px = [0u8; 3];
                for (k, p) in px.iter_mut().enumerate() {
                    let c = if ch == 1 { 0 } else { k };
                    let v = img[c * plane + y * s + x] * out.std[c] + out.mean[c];
                    *p = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
                if let (Some(hidden), Some(p)) = (hidden, patch_size) {
                    if hidden[(y / p) * (s / p) + x / p] {
                        px = [128, 128, 128];
                    }
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px_x, px_y) =
                            (gap + t * (tile + gap) + x * scale + dx, gap + r * (tile + gap) + y * scale + dy);
                        sheet.put_pixel(px_x as u32, px_y as u32, image::Rgb(px));
                    }
                }
            }
        }
    };
    for r in 0..rows {
        for (t, c) in cols.iter().enumerate() {
            let values = crate::task::vision::f32_values(batch, c)?;
            let wd = values.len() / batch.num_rows();
            draw(r, t, &values[r * wd..(r + 1) * wd], None);
        }
        if let Some(m) = &mask {
            let n = m.len() / batch.num_rows();
            let values = crate::task::vision::f32_values(batch, "pixel_values")?;
            let wd = values.len() / batch.num_rows();
            draw(r, cols.len(), &values[r * wd..(r + 1) * wd], Some(&m[r * n..(r + 1) * n]));
        }
    }
    sheet
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| crate::Error::env(format!("cannot write `{}`: {e}", path.display())))
}
