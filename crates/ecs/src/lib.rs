//! `tollgate-ecs`: rolls Tollgate (or anything) out on Amazon ECS from one deployment file.
//!
//! The file (`spec`) is checked completely before any AWS call. The planner (`plan`) and the
//! rollout engine (`rollout`, `ops`) are plain logic over the [`ecs::Ecs`] trait, which the
//! SDK implements (`aws`) and a scripted fake (`fake`) implements for the decisions a local
//! moto server cannot model (task states, circuit breaker, exit codes).

pub mod aws;
pub mod ecs;
pub mod fake;
pub mod ops;
pub mod plan;
mod position;
pub mod rollout;
pub mod spec;

pub use position::Pos;
