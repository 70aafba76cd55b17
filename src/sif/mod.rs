//! SIF (Singularity Image Format) container format.
