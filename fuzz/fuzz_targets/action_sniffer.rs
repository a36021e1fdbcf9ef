//! The `$ACTION_ID_` body sniffer: any content type and body; urlencoded bodies
//! against `URLSearchParams` semantics; multipart bodies as browsers write them.
#![no_main]
use libfuzzer_sys::{arbitrary::Arbitrary, arbitrary::Unstructured, fuzz_target};
use rotagate_fuzz::props;

fn field(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<(String, String)> {
    let k = match u.int_in_range(0..=3)? {
        0 => format!("$ACTION_ID_{}", String::arbitrary(u)?),
        1 => (*u.choose(&[
            "$ACTION_REF_1",
            "$ACTION_1:0",
            "$ACTION_KEY",
            "name",
            "1_$ACTION_ID_x",
        ])?)
        .to_string(),
        _ => String::arbitrary(u)?,
    };
    Ok((k, String::arbitrary(u)?))
}

fn run(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<()> {
    let fields: Vec<(String, String)> = (0..u.int_in_range(0..=5)?)
        .map(|_| field(u))
        .collect::<Result<_, _>>()?;
    let boundary = if u.ratio(3, 4)? {
        "----WebKitFormBoundaryX".to_string()
    } else {
        String::arbitrary(u)?
    };
    props::action_multipart(&boundary, &fields);
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &fields {
        body.append_pair(k, v);
    }
    props::action_urlencoded(body.finish().as_bytes());
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|b| *b == b'\n').unwrap_or(0);
    props::action_any(&data[..cut], data.get(cut + 1..).unwrap_or_default());
    props::action_any(b"multipart/form-data; boundary=x", data);
    props::action_urlencoded(data);
    let _ = run(&mut Unstructured::new(data));
});
