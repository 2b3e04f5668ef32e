//! Flame graph SVGs from folded stacks, with the `inferno` crate: searchable (the Search button
//! or Ctrl-F), zoomable by click, the process and thread as the bottom frames. A differential
//! graph is drawn with the target's widths and coloured by how each frame changed from the base:
//! red grew, blue shrank.

use std::{io, str::FromStr};

use inferno::{
    differential,
    flamegraph::{self, Options, color::StrokeColor},
};

use super::{folded::Folded, stacks::ValueKind};

/// What a graph is titled and how its values read.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    pub title: &'a str,
    pub subtitle: Option<&'a str>,
    pub value: ValueKind,
}

fn options(labels: Labels<'_>) -> Options<'static> {
    let mut options = Options::default();
    options.title = labels.title.to_owned();
    options.subtitle = labels.subtitle.map(str::to_owned);
    // Colours from a hash of the name: the same function has the same colour everywhere, and
    // the output is reproducible.
    options.hash = true;
    options.name_type = "Function:".to_owned();
    options.count_name = match labels.value {
        ValueKind::Cpu => "µs CPU",
        ValueKind::Samples => "samples",
        ValueKind::OffCpu => "µs off-CPU",
        ValueKind::Switches => "switches",
    }
    .to_owned();
    options
}

/// What the graph is drawn from: times in microseconds (inferno's `factor` would scale the
/// values but not a differential graph's changes).
fn drawn(folded: &Folded, value: ValueKind) -> Folded {
    if value.is_time() {
        folded.scaled(1_000)
    } else {
        folded.clone()
    }
}

/// The flame graph of `folded` (which must not be empty), as a standalone SVG document.
pub fn flame_graph(folded: &Folded, labels: Labels<'_>) -> io::Result<String> {
    let lines: Vec<String> = drawn(folded, labels.value).lines().collect();
    render(&mut options(labels), lines.iter().map(String::as_str))
}

/// The flame graph of `folded` without its script, for a page that holds another graph:
/// inferno's script drives the first graph of a document by its element IDs, so this one's IDs
/// are prefixed with `prefix` (its script would find none of them), and its buttons (Search,
/// Reset Zoom), which need the script, are left out. Its frames keep their tooltips (`<title>`)
/// and their names cut to fit (inferno cuts them when drawing, for a 1200-pixel width that
/// scales with the page).
pub fn still_flame_graph(folded: &Folded, labels: Labels<'_>, prefix: &str) -> io::Result<String> {
    let lines: Vec<String> = drawn(folded, labels.value).lines().collect();
    let mut options = options(labels);
    options.no_javascript = true;
    let svg = render(&mut options, lines.iter().map(String::as_str))?;
    Ok(still(&svg, prefix))
}

/// `svg` (inferno's) with its script, buttons and IDs made inert (see [`still_flame_graph`]).
fn still(svg: &str, prefix: &str) -> String {
    let mut svg = svg.to_owned();
    // The script element (with no_javascript, only its variables), whole.
    if let (Some(start), Some(end)) = (svg.find("<script"), svg.find("</script>"))
        && start < end
    {
        svg.replace_range(start..end + "</script>".len(), "");
    }
    // The buttons: text elements with these IDs.
    for id in ["unzoom", "search", "matched"] {
        let open = format!(r#"<text id="{id}""#);
        if let Some(start) = svg.find(&open)
            && let Some(length) = svg[start..].find("</text>")
        {
            svg.replace_range(start..start + length + "</text>".len(), "");
        }
    }
    // The root frame's name, which inferno leaves to the script.
    if let Some(root) = svg.find("<title>all (")
        && let Some(text) = svg[root..].find("></text>")
    {
        svg.insert_str(root + text + 1, "all");
    }
    // Its IDs, and the references to them: its gradient's, its style's (which applies to the
    // whole page an SVG is inlined in).
    let mut svg = without_onload(&svg).replace(r#" id=""#, &format!(r#" id="{prefix}"#));
    for id in [
        "background",
        "title",
        "subtitle",
        "details",
        "frames",
        "unzoom",
        "search",
        "matched",
    ] {
        svg = svg.replace(&format!("#{id}"), &format!("#{prefix}{id}"));
    }
    svg
}

/// The differential flame graph from `base` to `target` (which must not be empty). With
/// `normalize`, the base is scaled to the target's total first, so colours show shares that
/// grew or shrank rather than a busier or calmer host.
pub fn differential(
    base: &Folded,
    target: &Folded,
    normalize: bool,
    labels: Labels<'_>,
) -> io::Result<String> {
    let mut merged = Vec::new();
    differential::from_readers(
        differential::Options {
            normalize,
            strip_hex: false,
        },
        drawn(base, labels.value).to_text().as_bytes(),
        drawn(target, labels.value).to_text().as_bytes(),
        &mut merged,
    )?;
    let merged = String::from_utf8(merged).map_err(io::Error::other)?;
    let mut options = options(labels);
    // Unchanged frames are white: outline them.
    options.stroke_color = StrokeColor::from_str("#c8c8c8").unwrap_or(StrokeColor::None);
    render(&mut options, merged.lines())
}

fn render<'a>(
    options: &mut Options<'_>,
    lines: impl IntoIterator<Item = &'a str>,
) -> io::Result<String> {
    let mut svg = Vec::new();
    flamegraph::from_lines(options, lines, &mut svg)?;
    String::from_utf8(svg).map_err(io::Error::other)
}

/// An SVG document made fit for inline use in an HTML page: without the XML declaration and
/// doctype (see [`without_onload`] too: the page calls `init()` itself).
pub fn for_html(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |start| &svg[start..])
}

/// Removes the `onload` handler of the root element: inline SVG does not fire it reliably, so a
/// page calls `init()` itself.
pub fn without_onload(svg: &str) -> String {
    svg.replacen(r#" onload="init(evt)""#, "", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stacks::{
        Stacks,
        tests::{labels, profile},
    };

    fn folded(samples: &[(&str, i64)]) -> Folded {
        let samples: Vec<_> = samples
            .iter()
            .map(|(stack, n)| (*stack, labels(4, 5), *n))
            .collect();
        Folded::new(
            &Stacks::from_profile(&profile(&samples)).samples,
            ValueKind::Cpu,
        )
    }

    #[test]
    fn the_svg_names_the_hot_function_the_process_and_the_thread() {
        let f = folded(&[("main;work;fixture_hot_leaf", 9), ("main;idle", 1)]);
        let svg = flame_graph(
            &f,
            Labels {
                title: "CPU of pid 4",
                subtitle: Some("1 profile"),
                value: ValueKind::Cpu,
            },
        )
        .unwrap();
        assert!(svg.contains("fixture_hot_leaf"), "{svg}");
        assert!(svg.contains("app4 (4)") && svg.contains("worker5 (5)"));
        assert!(svg.contains("CPU of pid 4"));
        assert!(
            svg.contains("fixture_hot_leaf (90,000 µs CPU, 90.00%)"),
            "{svg}"
        );
        assert!(svg.contains("search"), "searchable");
        let inline = for_html(&svg);
        assert!(inline.starts_with("<svg"));
        assert!(
            without_onload(inline).starts_with("<svg")
                && !without_onload(inline).contains("onload")
        );
    }

    #[test]
    fn names_are_escaped() {
        let f = folded(&[("main;<script>alert(1)</script>&", 1)]);
        let labels = Labels {
            title: "<b>t</b>",
            subtitle: None,
            value: ValueKind::Samples,
        };
        let svg = flame_graph(&f, labels).unwrap();
        assert!(!svg.contains("<script>alert"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;"));
    }

    #[test]
    fn a_differential_graph_colours_growth() {
        let base = folded(&[("main;grows", 1), ("main;shrinks", 9)]);
        let target = folded(&[("main;grows", 9), ("main;shrinks", 1)]);
        let labels = Labels {
            title: "diff",
            subtitle: None,
            value: ValueKind::Cpu,
        };
        let svg = differential(&base, &target, true, labels).unwrap();
        assert!(
            svg.contains("grows (90,000 µs CPU, 90.00%; +80.00%)"),
            "{svg}"
        );
        assert!(
            svg.contains("shrinks (10,000 µs CPU, 10.00%; -80.00%)"),
            "{svg}"
        );
    }

    #[test]
    fn off_cpu_graphs_read_in_microseconds_off_the_cpu() {
        let stacks = Stacks::from_profile(&crate::report::stacks::tests::off_cpu_profile(&[
            ("main;poll;do_poll[k]", labels(4, 5), 9),
            ("main;idle", labels(4, 5), 1),
        ]));
        let f = Folded::new(&stacks.samples, ValueKind::OffCpu);
        let labels = Labels {
            title: "Off-CPU time: offcpu-1.pb.gz",
            subtitle: None,
            value: ValueKind::OffCpu,
        };
        let svg = flame_graph(&f, labels).unwrap();
        assert!(svg.contains("do_poll (90,000 µs off-CPU, 90.00%)"), "{svg}");
        assert!(svg.contains("Off-CPU time: offcpu-1.pb.gz"));
        let f = Folded::new(&stacks.samples, ValueKind::Switches);
        let svg = flame_graph(
            &f,
            Labels {
                value: ValueKind::Switches,
                ..labels
            },
        )
        .unwrap();
        assert!(svg.contains("do_poll (9 switches, 90.00%)"), "{svg}");
    }

    #[test]
    fn a_still_graph_has_no_script_no_buttons_and_ids_of_its_own() {
        let f = folded(&[("main;work;fixture_hot_leaf", 9), ("main;<idle>", 1)]);
        let labels = Labels {
            title: "Off-CPU",
            subtitle: None,
            value: ValueKind::Cpu,
        };
        let live = flame_graph(&f, labels).unwrap();
        assert!(live.contains(r#"id="frames""#) && live.contains("<script"));
        let svg = still_flame_graph(&f, labels, "still-").unwrap();
        assert!(
            !svg.contains("<script") && !svg.contains("function "),
            "{svg}"
        );
        assert!(
            !svg.contains(">Search<") && !svg.contains("Reset Zoom"),
            "{svg}"
        );
        for id in ["frames", "details", "title", "background"] {
            assert!(!svg.contains(&format!(r#"id="{id}""#)), "{id}: {svg}");
            assert!(svg.contains(&format!(r#"id="still-{id}""#)), "{id}: {svg}");
        }
        assert!(svg.contains("url(#still-background)") && !svg.contains("url(#background)"));
        assert!(
            svg.contains("#still-title {") && !svg.contains("#title {"),
            "its style"
        );
        assert!(!svg.contains("onload"), "{svg}");
        assert!(svg.contains(">all</text>"), "the root is named: {svg}");
        assert!(
            svg.contains("fixture_hot_leaf (90,000 µs CPU, 90.00%)"),
            "tooltips stay"
        );
        assert!(svg.contains("&lt;idle&gt;"), "names stay escaped");
        assert!(for_html(&svg).starts_with("<svg"));
    }
}
