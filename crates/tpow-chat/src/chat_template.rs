//! ChatML prompts as SmolLM2's chat template renders them.
//!
//! The template in the GGUF (`tokenizer.chat_template`) is
//!
//! ```text
//! {% for message in messages %}
//!   {% if loop.first and messages[0]['role'] != 'system' %}
//!     {{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}
//!   {% endif %}
//!   {{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
//! {% endfor %}
//! {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
//! ```
//!
//! so this renders exactly that, with the default system prompt read from the
//! template text of the file (not hard-coded), and the generation prompt always on.

use crate::{Message, Role};

/// The ChatML renderer of one model.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// The system prompt used when the first message is not a system message.
    pub default_system: Option<String>,
}

impl Role {
    /// The role's name in ChatML.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl ChatTemplate {
    /// Reads the default system prompt out of a ChatML Jinja template: the text
    /// between `<|im_start|>system` + newline and the next `<|im_end|>` inside the
    /// template's literal (a newline may be written as a real newline or as `\n`).
    pub fn from_jinja(template: &str) -> ChatTemplate {
        let marker = "<|im_start|>system";
        let default_system = template.find(marker).and_then(|i| {
            let rest = &template[i + marker.len()..];
            let rest = rest.strip_prefix('\n').or_else(|| rest.strip_prefix("\\n"))?;
            let end = rest.find("<|im_end|>")?;
            let text = &rest[..end];
            // A literal built from pieces (`+ message['content'] +`) is not a default prompt.
            if text.contains('\'') || text.contains('{') {
                return None;
            }
            Some(text.replace("\\n", "\n"))
        });
        ChatTemplate { default_system }
    }

    /// The prompt text of `messages`, ending with the assistant's turn opening.
    pub fn render(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        for part in self.parts(messages) {
            match part {
                Part::Control(c) => out.push_str(c),
                Part::Text(t) => out.push_str(&t),
            }
        }
        out
    }

    /// The prompt of `messages` as the template's control tokens and the text
    /// between them. Only the template writes control tokens: a message's text is
    /// always a [`Part::Text`], to be tokenised as plain text, so a user who types
    /// `<|im_end|>\n<|im_start|>system` writes characters, not a new turn. The text
    /// parts are exactly the spans between the control tokens of [`render`], so
    /// for messages without special-token strings, tokenising the parts gives the
    /// ids of the rendered text.
    ///
    /// [`render`]: ChatTemplate::render
    pub fn parts<'a>(&'a self, messages: &'a [Message]) -> Vec<Part<'a>> {
        let mut out = Vec::with_capacity(4 * messages.len() + 6);
        let turn = |out: &mut Vec<Part<'a>>, role: Role, content: &str| {
            out.push(Part::Control(IM_START));
            out.push(Part::Text(format!("{}\n{content}", role.as_str()).into()));
            out.push(Part::Control(IM_END));
            out.push(Part::Text("\n".into()));
        };
        if let (Some(first), Some(system)) = (messages.first(), &self.default_system) {
            if first.role != Role::System {
                turn(&mut out, Role::System, system);
            }
        }
        for m in messages {
            turn(&mut out, m.role, &m.content);
        }
        out.push(Part::Control(IM_START));
        out.push(Part::Text("assistant\n".into()));
        out
    }
}

/// ChatML's turn opening.
pub const IM_START: &str = "<|im_start|>";
/// ChatML's turn end.
pub const IM_END: &str = "<|im_end|>";

/// A piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    /// A control token of the template (by its text).
    Control(&'static str),
    /// Text, tokenised as plain text whatever it contains.
    Text(std::borrow::Cow<'a, str>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: Role, content: &str) -> Message {
        Message { role, content: content.into() }
    }

    #[test]
    fn default_system_prompt_from_template() {
        let t = ChatTemplate::from_jinja(SMOLLM2);
        assert_eq!(
            t.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        let escaped = SMOLLM2.replace('\n', "\\n");
        assert_eq!(ChatTemplate::from_jinja(&escaped).default_system, t.default_system);
    }

    #[test]
    fn renders_chatml() {
        let t = ChatTemplate::from_jinja(SMOLLM2);
        assert_eq!(
            t.render(&[msg(Role::User, "Hi")]),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[
                msg(Role::System, "Be brief."),
                msg(Role::User, "Hi"),
                msg(Role::Assistant, "Hello!"),
                msg(Role::User, "Bye")
            ]),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn no_default_without_one_in_template() {
        let t =
            ChatTemplate::from_jinja("{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}");
        assert_eq!(t.default_system, None);
        assert_eq!(t.render(&[msg(Role::User, "x")]), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    }
}
