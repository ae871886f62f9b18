//! `single-profile-handler`: run the one profile once and make its result primary.

use crate::scheduling::error::SchedulingError;
use crate::scheduling::plugin::{
    ProfileHandler, ProfileOutcomes, SchedulingContext, SchedulingResult,
};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SingleProfileHandler;

impl crate::decode::Params for SingleProfileHandler {}

impl ProfileHandler for SingleProfileHandler {
    fn type_name(&self) -> &'static str {
        "single-profile-handler"
    }

    fn pick_profiles(&self, _: &SchedulingContext<'_>, outcomes: &ProfileOutcomes) -> Vec<usize> {
        (0..outcomes.len())
            .filter(|&i| outcomes[i].is_none())
            .collect()
    }

    fn process_results(
        &self,
        profile_names: &[String],
        outcomes: ProfileOutcomes,
    ) -> Result<SchedulingResult, SchedulingError> {
        let ran: Vec<(usize, Result<_, _>)> = outcomes
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| o.map(|r| (i, r)))
            .collect();
        if ran.len() != 1 {
            return Err(if ran.is_empty() {
                SchedulingError::NoProfileRun
            } else {
                SchedulingError::ProfileCount(ran.len())
            });
        }
        let (i, outcome) = ran.into_iter().next().expect("one result");
        let name = profile_names[i].clone();
        match outcome {
            Ok(result) => Ok(SchedulingResult {
                profile_results: vec![(name, result)],
                primary: 0,
            }),
            Err(e) => Err(SchedulingError::ProfileFailed {
                profile: name,
                source: Box::new(e),
            }),
        }
    }
}
