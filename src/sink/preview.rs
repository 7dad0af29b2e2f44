//! `pretext preview`: the first examples of the stream, decoded, with the pretext corruption
//! visible.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;

use crate::error::Result;
use crate::task::list_values;
use crate::task::mlm::IGNORE;
use crate::tokenize::TextTokenizer;

/// Legend printed under MLM previews.
pub const MLM_LEGEND: &str =
    "legend: [MASK=x] masked (label x) · {y=x} replaced by random y (label x) · (x) kept, still predicted";

/// Renders the MLM examples of `batch` (at most `limit`), numbering from `first`.
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
            "--- example {} · example_key {} · {} tokens ({} padding) · {} selected ---\n",
            first + row + 1,
            keys.value(row),
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
        out.push_str(&format!("--- example {} · example_key {} ---\n", first + row + 1, keys.value(row)));
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
