//! Reads weight tensors (graph initializers) out of an ONNX file.
//!
//! Decoding is done by `prost`; the structs below declare only the fields of ONNX's
//! `ModelProto`/`GraphProto`/`TensorProto` that hold weights, with their field numbers from
//! `onnx.proto`. Every other field in the file is skipped by prost as unknown.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::ModelError;

/// `ModelProto`: only the graph is needed.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

/// `GraphProto`: only the initializers (the weights) are needed.
#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

/// `TensorProto`: shape, element type and the two places float data can live.
#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    /// 1 = EXTERNAL: the data lives in a side file, which we do not support.
    #[prost(int32, tag = "14")]
    data_location: i32,
}

/// ONNX `TensorProto.DataType.FLOAT`.
const ONNX_FLOAT: i32 = 1;
/// ONNX `TensorProto.DataLocation.EXTERNAL`.
const ONNX_EXTERNAL: i32 = 1;

/// One float weight tensor read from an ONNX file.
#[derive(Debug, Clone)]
pub struct OnnxTensor {
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Reads every float initializer of the ONNX model at `path`, keyed by name.
pub fn read_initializers(path: &Path) -> Result<HashMap<String, OnnxTensor>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_initializers(&bytes).map_err(|reason| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decodes the float initializers of an ONNX model held in memory.
fn decode_initializers(bytes: &[u8]) -> Result<HashMap<String, OnnxTensor>, String> {
    let model =
        ModelProto::decode(bytes).map_err(|err| format!("not a valid ONNX protobuf: {err}"))?;
    let graph = model.graph.ok_or("the ONNX model has no graph")?;
    let mut tensors = HashMap::with_capacity(graph.initializer.len());
    for tensor in graph.initializer {
        if tensor.data_type != ONNX_FLOAT {
            // Shape constants and the like; the networks we load keep their weights in f32.
            continue;
        }
        if tensor.data_location == ONNX_EXTERNAL {
            return Err(format!(
                "initializer `{}` keeps its data in an external file, which is not supported",
                tensor.name
            ));
        }
        let shape = tensor
            .dims
            .iter()
            .map(|&dim| usize::try_from(dim))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("initializer `{}` has a negative dimension", tensor.name))?;
        let expected: usize = shape.iter().product();
        let values = if !tensor.raw_data.is_empty() {
            if tensor.raw_data.len() != expected * 4 {
                return Err(format!(
                    "initializer `{}` has {} bytes of data, its shape {:?} needs {}",
                    tensor.name,
                    tensor.raw_data.len(),
                    shape,
                    expected * 4
                ));
            }
            // ONNX stores raw data little-endian.
            tensor
                .raw_data
                .chunks_exact(4)
                .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect()
        } else {
            if tensor.float_data.len() != expected {
                return Err(format!(
                    "initializer `{}` has {} values, its shape {:?} needs {}",
                    tensor.name,
                    tensor.float_data.len(),
                    shape,
                    expected
                ));
            }
            tensor.float_data
        };
        tensors.insert(tensor.name, OnnxTensor { shape, values });
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with(tensor: TensorProto) -> Vec<u8> {
        ModelProto {
            graph: Some(GraphProto {
                initializer: vec![tensor],
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn reads_raw_and_typed_float_data() {
        let raw: Vec<u8> = [1.0f32, -2.5, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = model_with(TensorProto {
            dims: vec![2, 2],
            data_type: ONNX_FLOAT,
            name: "w".into(),
            raw_data: raw,
            ..Default::default()
        });
        let tensors = decode_initializers(&bytes).expect("decodes");
        assert_eq!(tensors["w"].shape, vec![2, 2]);
        assert_eq!(tensors["w"].values, vec![1.0, -2.5, 3.0, 4.0]);

        let bytes = model_with(TensorProto {
            dims: vec![3],
            data_type: ONNX_FLOAT,
            name: "b".into(),
            float_data: vec![0.5, 0.25, 0.125],
            ..Default::default()
        });
        assert_eq!(
            decode_initializers(&bytes).expect("decodes")["b"].values,
            vec![0.5, 0.25, 0.125]
        );
    }

    #[test]
    fn rejects_size_mismatch_and_garbage() {
        let bytes = model_with(TensorProto {
            dims: vec![4],
            data_type: ONNX_FLOAT,
            name: "w".into(),
            raw_data: vec![0; 12],
            ..Default::default()
        });
        let err = decode_initializers(&bytes).expect_err("size mismatch");
        assert!(err.contains("needs 16"), "{err}");
        assert!(decode_initializers(b"\xff\xff\xff\xff garbage").is_err());
        assert!(
            decode_initializers(&[]).is_err(),
            "an empty file has no graph"
        );
    }
}
