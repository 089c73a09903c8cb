//! Checks real answers against an OpenAPI document: the operation exists, documents the status,
//! and the JSON body validates against the schema documented for it (JSON Schema 2020-12, as
//! OpenAPI 3.1 uses). Used by the origin's router tests and, through the `conformance` feature, by
//! the end-to-end test of the Worker's document.

use serde_json::{Value, json};

/// One document, ready to check answers and examples against.
pub struct Conformance {
    doc: Value,
}

impl Conformance {
    /// Checks against `doc` (an OpenAPI 3.1 document as JSON).
    pub fn new(doc: Value) -> Self {
        Conformance { doc }
    }

    /// Every operation, as `METHOD /path/{template}`.
    pub fn operations(&self) -> Vec<String> {
        let Some(paths) = self.doc["paths"].as_object() else { return Vec::new() };
        paths
            .iter()
            .flat_map(|(template, item)| {
                item.as_object()
                    .into_iter()
                    .flat_map(|ops| ops.keys())
                    .map(move |method| format!("{} {template}", method.to_uppercase()))
            })
            .collect()
    }

    /// The operation that `method` on the concrete `path` reaches: its name and object.
    fn operation(&self, method: &str, path: &str) -> Option<(String, &Value)> {
        let concrete: Vec<&str> = path.split('/').collect();
        self.doc["paths"].as_object()?.iter().find_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            let same = parts.len() == concrete.len()
                && parts.iter().zip(&concrete).all(|(t, c)| t == c || (t.starts_with('{') && !c.is_empty()));
            let op = item.get(method.to_lowercase())?;
            same.then(|| (format!("{} {template}", method.to_uppercase()), op))
        })
    }

    /// Checks one answer; returns the operation's name, or what is wrong.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<String, String> {
        let (name, op) = self.operation(method, path).ok_or_else(|| format!("{method} {path} is not documented"))?;
        let documented = &op["responses"][status.to_string()];
        if !documented.is_object() {
            return Err(format!("{name} answered {status}, which it does not document"));
        }
        if content_type.starts_with("application/json") {
            let schema = &documented["content"]["application/json"]["schema"];
            if !schema.is_object() {
                return Err(format!("{name} {status}: a JSON body without a documented schema"));
            }
            let body: Value =
                serde_json::from_slice(body).map_err(|e| format!("{name} {status}: the body is not JSON: {e}"))?;
            let problems = self.problems(schema, &body)?;
            if !problems.is_empty() {
                return Err(format!("{name} {status}: the body is not what the document says: {problems:?}\n{body}"));
            }
        }
        Ok(name)
    }

    /// Validates every `example` in the document against its schema; returns how many.
    pub fn check_examples(&self) -> Result<usize, String> {
        let mut checked = 0;
        let mut stack = vec![(String::from("#"), &self.doc)];
        while let Some((at, node)) = stack.pop() {
            match node {
                Value::Object(map) => {
                    if let Some(example) = map.get("example") {
                        // A parameter or a media type holds its schema; a schema object is its own.
                        let schema = match map.get("schema") {
                            Some(schema) => schema.clone(),
                            None => Value::Object(
                                map.iter()
                                    .filter(|(k, _)| *k != "example")
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            ),
                        };
                        let problems = self.problems(&schema, example)?;
                        if !problems.is_empty() {
                            return Err(format!("the example at {at} is not valid: {problems:?}"));
                        }
                        checked += 1;
                    }
                    stack.extend(map.iter().map(|(key, value)| (format!("{at}/{key}"), value)));
                }
                Value::Array(values) => stack.extend(values.iter().enumerate().map(|(i, v)| (format!("{at}/{i}"), v))),
                _ => {}
            }
        }
        Ok(checked)
    }

    /// What is wrong with `instance` against `schema` (`#/components/...` resolved in the document).
    fn problems(&self, schema: &Value, instance: &Value) -> Result<Vec<String>, String> {
        let rooted = json!({"allOf": [schema], "components": self.doc["components"]});
        let validator = jsonschema::validator_for(&rooted).map_err(|e| format!("schema {schema}: {e}"))?;
        Ok(validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect())
    }
}
