//! Which Kafka errors are worth another attempt: one classification per client (rskafka,
//! rdkafka) and one for topic administration, read by the [`retry`](super::retry()) loop and by
//! every caller that decides between "retry" and "give up".
//!
//! ```text
//!  rskafka Error ──────────┐
//!  rdkafka KafkaError ─────┼─► Classify::class ─► Transient (retry) | Permanent (give up)
//!  TopicError (admin) ─────┘ (its impl lives beside it in admin.rs)
//!  rdkafka error code ─► rdkafka_code_class ─► Some(class) | None (not listed: the caller decides)
//! ```

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rskafka::client::error::{Error as RsError, ProtocolError};

/// Whether an error is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Another attempt may succeed: the broker is away, busy, or moving a leader.
    Transient,
    /// Retrying the same request cannot help: the record, the topic or our rights are wrong.
    Permanent,
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    /// Transient or permanent.
    fn class(&self) -> ErrorClass;

    /// No retry of the same request can succeed.
    fn is_permanent(&self) -> bool {
        self.class() == ErrorClass::Permanent
    }
}

/// rskafka: the broker's answers that no retry changes are permanent; everything else (no
/// connection, no leader, a timeout, an answer not listed) is retried. Such a dispatch is dropped
/// (and counted); such a topic is retried only later, in the background.
impl Classify for RsError {
    fn class(&self) -> ErrorClass {
        match self {
            RsError::ServerError {
                protocol_error:
                    ProtocolError::MessageTooLarge
                    | ProtocolError::RecordListTooLarge
                    | ProtocolError::InvalidRecord
                    | ProtocolError::TopicAuthorizationFailed
                    | ProtocolError::ClusterAuthorizationFailed
                    | ProtocolError::InvalidTopicException
                    | ProtocolError::UnsupportedForMessageFormat,
                ..
            } => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// The broker refused the request for want of rights (TOPIC_ or CLUSTER_AUTHORIZATION_FAILED).
/// Permanent for a one-shot request (`cronq trigger` says so at once), but rights are
/// configuration: an ACL being fixed, or an authorizer still loading after a broker restart. A
/// caller that must not lose what it writes (the dispatcher's producers) waits and retries.
pub fn is_authorization(e: &RsError) -> bool {
    matches!(
        e,
        RsError::ServerError {
            protocol_error: ProtocolError::TopicAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed,
            ..
        }
    )
}

/// The rskafka failure is the broker's reachability (connection refused or lost, no answer, no
/// leader), as opposed to an answer about the request.
pub fn is_connectivity(e: &RsError) -> bool {
    match e {
        RsError::Connection(_) | RsError::Request(_) | RsError::RetryFailed(_) => true,
        RsError::ServerError { protocol_error, .. } => matches!(
            protocol_error,
            ProtocolError::LeaderNotAvailable
                | ProtocolError::NotLeaderOrFollower
                | ProtocolError::BrokerNotAvailable
                | ProtocolError::NetworkException
                | ProtocolError::RequestTimedOut
                | ProtocolError::NotController
                | ProtocolError::CoordinatorNotAvailable
        ),
        _ => false,
    }
}

/// The rdkafka error codes whose class is known; `None` for the rest, which each caller settles
/// by what a wrong guess costs: a produce retries them (giving up loses a report), a topic
/// creation reports them as a refusal (retrying would hide the broker's "no" forever).
pub fn rdkafka_code_class(code: RDKafkaErrorCode) -> Option<ErrorClass> {
    match code {
        // The record is too large for the client or the broker, the topic is invalid, or this
        // client may not write it.
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::MessageBatchTooLarge
        | RDKafkaErrorCode::InvalidRecord
        | RDKafkaErrorCode::InvalidTopic
        | RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => Some(ErrorClass::Permanent),
        // "Ask again later" rather than "no".
        RDKafkaErrorCode::RequestTimedOut
        | RDKafkaErrorCode::NotController
        | RDKafkaErrorCode::BrokerNotAvailable
        | RDKafkaErrorCode::NetworkException
        | RDKafkaErrorCode::BrokerTransportFailure
        | RDKafkaErrorCode::AllBrokersDown
        | RDKafkaErrorCode::OperationTimedOut
        | RDKafkaErrorCode::LeaderNotAvailable => Some(ErrorClass::Transient),
        _ => None,
    }
}

/// rdkafka: the codes [`rdkafka_code_class`] knows as permanent; everything else, an error
/// without a code included, is retried.
impl Classify for KafkaError {
    fn class(&self) -> ErrorClass {
        self.rdkafka_error_code()
            .and_then(rdkafka_code_class)
            .unwrap_or(ErrorClass::Transient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(protocol_error: ProtocolError) -> RsError {
        RsError::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Topic("jobs".into()),
            response: None,
            is_virtual: false,
        }
    }

    #[test]
    fn an_rskafka_record_too_large_is_permanent_and_a_lost_leader_is_transient() {
        assert!(server_error(ProtocolError::MessageTooLarge).is_permanent());
        assert!(server_error(ProtocolError::TopicAuthorizationFailed).is_permanent());
        let moved = server_error(ProtocolError::NotLeaderOrFollower);
        assert_eq!(moved.class(), ErrorClass::Transient);
        assert!(is_connectivity(&moved));
        assert!(!is_connectivity(&server_error(
            ProtocolError::MessageTooLarge
        )));
    }

    #[test]
    fn only_the_two_authorization_answers_are_authorization_errors() {
        assert!(is_authorization(&server_error(
            ProtocolError::TopicAuthorizationFailed
        )));
        assert!(is_authorization(&server_error(
            ProtocolError::ClusterAuthorizationFailed
        )));
        assert!(!is_authorization(&server_error(
            ProtocolError::MessageTooLarge
        )));
        assert!(!is_authorization(&server_error(
            ProtocolError::NotLeaderOrFollower
        )));
    }

    #[test]
    fn an_rdkafka_error_is_retried_unless_its_code_is_known_permanent() {
        use rdkafka::error::KafkaError::MessageProduction;
        assert!(MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge).is_permanent());
        assert!(MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed).is_permanent());
        // The local queue timed out (the broker is away): not listed, so retried.
        assert_eq!(
            MessageProduction(RDKafkaErrorCode::MessageTimedOut).class(),
            ErrorClass::Transient
        );
        assert_eq!(rdkafka_code_class(RDKafkaErrorCode::MessageTimedOut), None);
        assert_eq!(
            rdkafka_code_class(RDKafkaErrorCode::AllBrokersDown),
            Some(ErrorClass::Transient)
        );
        assert_eq!(KafkaError::Canceled.class(), ErrorClass::Transient);
    }
}
