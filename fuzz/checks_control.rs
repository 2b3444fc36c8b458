//! Checks shared by the `control_msg` fuzz target and the corpus replay in the root test
//! suite (`tests/fuzz_corpus.rs`): `ControlMsg` (the coordinator protocol, serde_json on the
//! wire) never panics to parse; what parses re-serializes stably and can be handed to a
//! node agent and a coordinator without panicking.

use netstorm_controlplane::coordinator::{ControlMsg, Coordinator, CoordinatorConfig, NodeAgent};

pub fn check_control_msg(data: &[u8]) -> Result<bool, String> {
    let Ok(msg) = serde_json::from_slice::<ControlMsg>(data) else {
        return Ok(false);
    };
    let once = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
    let again: ControlMsg = serde_json::from_slice(&once)
        .map_err(|e| format!("re-serialized message does not parse: {e}"))?;
    if serde_json::to_vec(&again).map_err(|e| e.to_string())? != once {
        return Err("control message does not re-serialize stably".into());
    }
    let mut agent = NodeAgent::new(1, 1);
    let _ = agent.handle(msg.clone());
    let _ = agent.take_install();
    let mut coord = Coordinator::new(4, 1, CoordinatorConfig::default());
    for from in 0..5 {
        coord.handle(1_000, from, msg.clone());
    }
    coord.handle_timeout(10_000_000_000);
    while coord.poll_transmit().is_some() {}
    Ok(true)
}
